"""Transformer engine quality and cost on the real benchmark data (Amazon Beauty, MovieLens-100K).

    .venv/bin/python benchmarks/quality_transformer.py [--data ../shared/data] [--datasets beauty ml-100k]
                                                       [--write benchmarks/results/transformer.md]

Protocol (../shared/data/README.md): leave-one-out by time, full ranking over all items, history excluded, scored by
``recengine.evaluation.evaluate``. The engine runs with its committed defaults (``TransformerSettings()`` and
``TrainingSettings()``); nothing here is tuned per data set. ``run(bench_data)`` returns one row per data set for
``benchmarks/quality.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from provenance import provenance_lines, write_report
from recengine.data.dataset import Dataset
from recengine.data.transforms import PrepareOptions, build_dataset
from recengine.engines.transformer.engine import TransformerEngine
from recengine.evaluation import evaluate
from recengine.settings import TrainingSettings, TransformerSettings
from recengine.training.run import fit

PEER_NDCG10 = 0.0561  # RecBole 1.2.1 SASRec (CE) on Beauty, ../shared/data/README.md


def load_beauty(root: Path) -> Dataset:
    """``Beauty.txt``: one line per user, ``user item1 item2 …`` in time order; the position is the time."""
    users: list[str] = []
    items: list[str] = []
    times: list[int] = []
    path = root / "amazon-beauty" / "Beauty.txt"
    with path.open() as fh:
        for line in fh:
            parts = line.split()
            if len(parts) < 2:
                continue
            users.extend([parts[0]] * (len(parts) - 1))
            items.extend(parts[1:])
            times.extend(range(len(parts) - 1))
    raw = pl.DataFrame({"user": users, "item": items, "timestamp": times}).with_row_index("row")
    return build_dataset(raw, options=PrepareOptions(source={"path": str(path)}))


def load_ml100k(root: Path) -> Dataset:
    """``u.data``: ``user<TAB>item<TAB>rating<TAB>unix_ts``; every rating is an interaction, ties keep file order."""
    path = root / "ml-100k" / "u.data"
    raw = pl.read_csv(
        path,
        separator="\t",
        has_header=False,
        new_columns=["user", "item", "rating", "timestamp"],
        schema_overrides={"user": pl.String, "item": pl.String, "rating": pl.Float64, "timestamp": pl.Int64},
    ).with_row_index("row")
    return build_dataset(raw, options=PrepareOptions(source={"path": str(path)}))


LOADERS = {"beauty": load_beauty, "ml-100k": load_ml100k}


def _load(name: str, root: Path) -> Dataset:
    ds = LOADERS[name](root)
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    ds.save(tmp)  # the manifest (sequence statistics, content hash) is written on save
    return Dataset.load(tmp)


def _latency(engine: TransformerEngine, ds: Dataset, n: int = 300) -> tuple[float, float]:
    _, histories, _ = ds.eval_cases("test")
    rng = np.random.default_rng(0)
    picks = rng.choice(len(histories), size=min(n, len(histories)), replace=False)
    times = []
    for i in picks:
        t = time.perf_counter()
        engine.recommend([histories[i]], k=10)
        times.append((time.perf_counter() - t) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def run_one(name: str, root: Path, **overrides: Any) -> dict[str, Any]:
    ds = _load(name, root)
    engine_cfg = TransformerSettings(**{k: v for k, v in overrides.items() if k in TransformerSettings.model_fields})
    training = TrainingSettings(**{k: v for k, v in overrides.items() if k in TrainingSettings.model_fields})
    epoch_log: list[tuple[float, float, int, str]] = []
    started, cpu_started = time.perf_counter(), time.process_time()

    def progress(message: str, done: int | None, total: int | None) -> None:
        if "valid ndcg" in message and "batch" not in message:
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
            epoch_log.append((wall, cpu, done or 0, message))
            print(f"[{name}] wall {wall:7.1f}s cpu {cpu:7.1f}s {message}", flush=True)

    with tempfile.TemporaryDirectory() as tracking:
        engine = fit("transformer", ds, engine_cfg, training, Path(tracking), progress=progress)
    assert isinstance(engine, TransformerEngine)
    train_s = time.perf_counter() - started
    test = evaluate(engine.score, ds, split="test", ks=(10, 20))
    summary = engine.metrics
    # Time to the peer's quality (a Beauty figure): first epoch whose validation NDCG@10 reached it.
    peer_epoch = next(
        (
            int(h["epoch"]) + 1
            for h in summary["valid_history"]
            if h["valid/ndcg@10"] >= PEER_NDCG10 and name == "beauty"
        ),
        None,
    )
    peer_s = next((t for t, _, e, _ in epoch_log if peer_epoch is not None and e == peer_epoch), None)
    cpu_per_epoch = epoch_log[-1][1] / max(1, len(epoch_log)) if epoch_log else None
    p50, p99 = _latency(engine, ds)
    return {
        "dataset": name,
        "users": ds.n_users,
        "items": ds.n_items,
        "max_len": engine.model.config.max_len,
        "hr@10": test["hr@10"],
        "ndcg@10": test["ndcg@10"],
        "hr@20": test["hr@20"],
        "ndcg@20": test["ndcg@20"],
        "valid_ndcg@10": summary["valid_ndcg@10"],
        "epochs_run": summary["epochs_run"],
        "best_epoch": summary["best_epoch"],
        "s_per_epoch": summary["seconds_per_epoch"],
        "cpu_s_per_epoch": None if cpu_per_epoch is None else round(cpu_per_epoch, 1),
        "threads": torch.get_num_threads(),
        "train_s": round(train_s, 1),
        "s_to_peer_valid_ndcg": None if peer_s is None else round(peer_s, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "latency_p50_ms": round(p50, 2),
        "latency_p99_ms": round(p99, 2),
        "overrides": overrides,
    }


def run(bench_data: Path, datasets: tuple[str, ...] = ("beauty", "ml-100k"), **overrides: Any) -> list[dict[str, Any]]:
    """One row per data set, with the engine's default configuration unless ``overrides`` say otherwise."""
    return [run_one(name, Path(bench_data), **overrides) for name in datasets]


def to_markdown(rows: list[dict[str, Any]], command: str) -> str:
    cols = [
        "dataset",
        "hr@10",
        "ndcg@10",
        "hr@20",
        "ndcg@20",
        "max_len",
        "s_per_epoch",
        "cpu_s_per_epoch",
        "best_epoch",
        "epochs_run",
        "train_s",
        "s_to_peer_valid_ndcg",
        "peak_rss_mib",
        "latency_p50_ms",
        "latency_p99_ms",
        "overrides",
    ]
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    for r in rows:
        lines.append(
            "| " + " | ".join(f"{r[c]:.4f}" if isinstance(r[c], float) and "@" in c else str(r[c]) for c in cols) + " |"
        )
    head = [
        "# Transformer engine — quality and cost",
        "",
        *provenance_lines(command),
        "- configuration: the committed defaults (`TransformerSettings()`, `TrainingSettings()`) except the "
        "`overrides` of each row (`--set`)",
        "- protocol: leave-one-out, full ranking over all items, history excluded (`recengine.evaluation`), test split",
        "- `s_per_epoch` is wall time per epoch including the per-epoch validation (10,000 users); it depends on how",
        "  much CPU other processes left. `cpu_s_per_epoch` is this process's CPU time per epoch, all threads: the",
        "  work itself, independent of the neighbours.",
        "- `s_to_peer_valid_ndcg`: wall seconds of training until validation NDCG@10 first reached the peer's test",
        "  NDCG@10 (0.0561, RecBole SASRec); validation is the only split looked at during training.",
        "- latency: one `recommend(k=10)` for one history, single thread, 300 test users.",
        "",
    ]
    return "\n".join([*head, *lines, ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("RECENGINE_BENCH_DATA", "../shared/data")))
    parser.add_argument("--datasets", nargs="+", default=["beauty", "ml-100k"], choices=sorted(LOADERS))
    parser.add_argument("--set", nargs="*", default=[], help="key=value overrides (JSON values), for experiments")
    parser.add_argument("--from-json", type=Path, nargs="*", default=[], help="rebuild the table from earlier output")
    parser.add_argument("--write", type=Path, default=None, help="write a markdown table here")
    args = parser.parse_args()
    overrides = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    rows = run(args.data, tuple(args.datasets), **overrides) if not args.from_json else []
    for path in args.from_json:
        rows += [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]
    for r in rows:  # the peer figure is a Beauty figure
        r["s_to_peer_valid_ndcg"] = r["s_to_peer_valid_ndcg"] if r["dataset"] == "beauty" else None
    for r in rows:
        print(json.dumps(r))
    if args.write is not None:
        write_report(args.write, to_markdown(rows, " ".join(["python", *sys.argv])))


if __name__ == "__main__":
    main()
