"""Quality benchmark: every engine on the real data sets, under the published protocol.

    python benchmarks/quality.py                                  # all engines, both data sets
    python benchmarks/quality.py --engines popularity ease --datasets beauty

Leave-one-out by time, full ranking over all items, history excluded (``recengine.evaluation``). Each (data set,
engine) pair runs in its own subprocess so that its peak memory (max RSS) is its own. Figures go to
``benchmarks/results/quality.md``, with the machine, the command and the date. Never run in CI: it reads
``$RECENGINE_BENCH_DATA`` (default ``../shared/data``), whose terms forbid copying it into the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from provenance import commit, provenance_lines, write_report

ROOT = Path(__file__).resolve().parents[1]
DATASETS = {
    # name → (path under the bench folder, reader format, item metadata file or None)
    "beauty": ("amazon-beauty/Beauty.txt", "sequences", None),
    "ml-100k": ("ml-100k/u.data", "movielens", "ml-100k/u.item"),
}
ENGINES = ("popularity", "ease", "ease@100", "transformer", "neural")
# Variants: a row name → (engine, settings overrides). ease@100 pins λ to the reference's value, to check that our
# split and evaluator reproduce the reference EASE figure; the plain "ease" row picks λ on validation as shipped.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {"ease@100": ("ease", {"lambdas": [100.0]})}
# The reference figures of ../shared/data/README.md (test split, same protocol) for side-by-side reading.
REFERENCE = {
    ("beauty", "popularity"): {"hr@10": 0.0115, "ndcg@10": 0.0054, "hr@20": 0.0201, "ndcg@20": 0.0075},
    ("beauty", "itemknn (ref)"): {"hr@10": 0.0623, "ndcg@10": 0.0372, "hr@20": 0.0847, "ndcg@20": 0.0428},
    ("beauty", "ease@100"): {"hr@10": 0.0694, "ndcg@10": 0.0374, "hr@20": 0.0969, "ndcg@20": 0.0443},
    ("beauty", "sasrec recbole (ref)"): {
        "hr@10": 0.0915,
        "ndcg@10": 0.0561,
        "hr@20": 0.1232,
        "ndcg@20": 0.0641,
    },
    ("ml-100k", "popularity"): {"hr@10": 0.0848, "ndcg@10": 0.0441, "hr@20": 0.1267, "ndcg@20": 0.0546},
    ("ml-100k", "itemknn (ref)"): {"hr@10": 0.1813, "ndcg@10": 0.0981, "hr@20": 0.2545, "ndcg@20": 0.1167},
    ("ml-100k", "ease@100"): {"hr@10": 0.1432, "ndcg@10": 0.0711, "hr@20": 0.2248, "ndcg@20": 0.0916},
}


def bench_root() -> Path:
    return Path(os.environ.get("RECENGINE_BENCH_DATA", ROOT.parent / "shared" / "data"))


def load_dataset(name: str) -> Any:
    from recengine.data.readers import read_interactions, read_items
    from recengine.data.transforms import PrepareOptions, build_dataset

    rel, fmt, items_rel = DATASETS[name]
    path = bench_root() / rel
    raw, _ = read_interactions(path, fmt=fmt, on_invalid="fail")
    # Item metadata (titles, genres) where the data set ships it: only the neural engine reads it.
    meta = read_items(bench_root() / items_rel, on_invalid="fail")[0] if items_rel else None
    return build_dataset(raw, meta, PrepareOptions(source={"path": str(path), "format": fmt}))


def latency(engine: Any, dataset: Any, n: int = 300) -> dict[str, float]:
    """Single-history recommend latency (one request = one history), median and p99 over ``n`` test histories."""
    _, histories, _ = dataset.eval_cases("test")
    pick = np.linspace(0, len(histories) - 1, min(n, len(histories))).astype(int)
    times = []
    for i in pick:
        h = histories[i]
        if len(h) == 0:
            continue
        t0 = time.perf_counter()
        engine.recommend([h], k=10)
        times.append((time.perf_counter() - t0) * 1000)
    return {"latency_p50_ms": float(np.median(times)), "latency_p99_ms": float(np.percentile(times, 99))}


PEER = {("beauty", "transformer"): 0.0561}  # the "peer's test quality" (RecBole SASRec, NDCG@10)


def test_curve_callback(dataset: Any) -> Any:
    """A Lightning callback that scores the *test* split after every epoch, for the report only.

    Selection still uses validation alone; this records when the weights of the moment first reached a given test
    figure, in training seconds (its own evaluation time is left out of the clock).
    """
    import lightning as L

    from recengine.evaluation import evaluate

    class TestCurve(L.Callback):
        def __init__(self) -> None:
            self.points: list[tuple[int, float, float]] = []  # (epoch, training seconds, test ndcg@10)
            self.started = 0.0
            self.excluded = 0.0

        def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            self.started = time.perf_counter()

        def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            t0 = time.perf_counter()
            was_training = pl_module.training
            pl_module.eval()
            try:
                ndcg = evaluate(pl_module.score, dataset, split="test", ks=(10,))["ndcg@10"]  # type: ignore[operator]
            finally:
                pl_module.train(was_training)
            self.points.append((trainer.current_epoch + 1, t0 - self.started - self.excluded, float(ndcg)))
            self.excluded += time.perf_counter() - t0

    return TestCurve()


def run_one(dataset_name: str, engine_name: str) -> dict[str, Any]:
    """Runs inside the child process: prepare, fit, evaluate, time."""
    import torch

    from recengine.evaluation import evaluate
    from recengine.settings import load_settings
    from recengine.training.run import fit

    settings = load_settings(None)
    t0 = time.perf_counter()
    dataset = load_dataset(dataset_name)
    prep_s = time.perf_counter() - t0
    base, overrides = VARIANTS.get(engine_name, (engine_name, {}))
    section = getattr(settings.engines, base).model_copy(update=overrides)
    curve = test_curve_callback(dataset) if base in ("transformer", "neural") else None
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        extra = {"callbacks": [curve]} if curve is not None else {}
        engine = fit(base, dataset, section, settings.training, Path(tmp), **extra)
        fit_s = time.perf_counter() - t0 - (curve.excluded if curve is not None else 0.0)
    t0 = time.perf_counter()
    metrics = evaluate(engine.score, dataset, split="test", ks=(10, 20))
    eval_s = time.perf_counter() - t0
    torch.set_num_threads(1)  # one request = one thread, as the server runs it
    row: dict[str, Any] = {
        "dataset": dataset_name,
        "engine": engine_name,
        **{k: metrics[k] for k in ("hr@10", "ndcg@10", "hr@20", "ndcg@20", "mrr@10", "coverage@10")},
        "n_users": metrics["n_users"],
        "prepare_s": prep_s,
        "fit_s": fit_s,
        "eval_s": eval_s,
        **latency(engine, dataset),
        "training": {k: v for k, v in engine.metrics.items() if not isinstance(v, dict | list)},
    }
    row["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    if curve is not None:
        # The run times its own fit; take the report-only test evaluations back out of those figures.
        t = row["training"]
        epochs = t.get("epochs_run")
        if "train_seconds" in t:
            t["train_seconds"] = round(t["train_seconds"] - curve.excluded, 1)
        if epochs and "seconds_per_epoch" in t:
            t["seconds_per_epoch"] = round(fit_s / epochs, 2)
        row["test_curve"] = [[e, round(s, 1), round(n, 5)] for e, s, n in curve.points]
        peer = PEER.get((dataset_name, engine_name))
        if peer is not None:
            row["training"]["s_to_peer_test_ndcg"] = next((s for _, s, n in curve.points if n >= peer), None)
    return row


def fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return "—" if value is None else str(value)


def write_markdown(rows: list[dict[str, Any]], command: str, out: Path) -> None:
    lines = [
        "# Quality benchmark",
        "",
        *provenance_lines(command),
        "- rows not re-run by that command are kept from earlier runs: each row's own commit is in the table, its"
        " command and date in quality.json",
        "- protocol: leave-one-out by time, full ranking over all items, history excluded, test split; ties in scores",
        "  broken uniformly at random in expectation (see `recengine.evaluation`)",
        "- peak RSS is the max resident memory of the process that prepared, trained and evaluated that one row",
        "- latency: one `recommend(k=10)` call for one history, one thread, 300 test users",
        "",
        "| data set | engine | HR@10 | NDCG@10 | HR@20 | NDCG@20 | coverage@10 | fit s | eval s | peak RSS GB"
        " | latency p50 / p99 ms | training | commit |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        training = ", ".join(f"{k}={fmt(v, 3)}" for k, v in r.get("training", {}).items())
        lines.append(
            f"| {r['dataset']} | {r['engine']} | {fmt(r['hr@10'])} | {fmt(r['ndcg@10'])} | {fmt(r['hr@20'])} | "
            f"{fmt(r['ndcg@20'])} | {fmt(r['coverage@10'], 3)} | {fmt(r['fit_s'], 1)} | {fmt(r['eval_s'], 1)} | "
            f"{fmt(r['peak_rss_gb'], 2)} | {fmt(r['latency_p50_ms'], 2)} / {fmt(r['latency_p99_ms'], 2)} | "
            f"{training} | {r.get('commit', 'not recorded')} |"
        )
    lines += [
        "",
        "## Reference figures (../shared/data/README.md, same protocol)",
        "",
        "| data set | model | HR@10 | NDCG@10 | HR@20 | NDCG@20 | ours − reference (NDCG@10) |",
        "|---|---|---|---|---|---|---|",
    ]
    ours = {(r["dataset"], r["engine"]): r for r in rows}
    for (ds, model), ref in REFERENCE.items():
        mine = ours.get((ds, model))
        delta = f"{(mine['ndcg@10'] - ref['ndcg@10']) / ref['ndcg@10'] * 100:+.1f} %" if mine else "—"
        lines.append(
            f"| {ds} | {model} | {ref['hr@10']:.4f} | {ref['ndcg@10']:.4f} | {ref['hr@20']:.4f} | "
            f"{ref['ndcg@20']:.4f} | {delta} |"
        )
    write_report(out, "\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "quality.md")
    parser.add_argument("--one", nargs=2, metavar=("DATASET", "ENGINE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_one(*args.one)))
        return
    if not (bench_root() / "ml-100k").is_dir():
        sys.exit(f"benchmark data not found under {bench_root()} (set RECENGINE_BENCH_DATA)")
    rows = []
    for ds in args.datasets:
        for engine in args.engines:
            print(f"== {ds} / {engine}", flush=True)
            proc = subprocess.run(
                [sys.executable, __file__, "--one", ds, engine], capture_output=True, text=True, check=False
            )
            result = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            if proc.returncode != 0 or not result:
                print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
                sys.exit(f"{ds} / {engine} failed (exit {proc.returncode})")
            row = json.loads(result[-1].removeprefix("RESULT "))
            print(
                f"   ndcg@10={row['ndcg@10']:.4f} hr@10={row['hr@10']:.4f} fit={row['fit_s']:.1f}s",
                flush=True,
            )
            rows.append(row)
    env = [f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("RECENGINE_") and "BENCH" not in k]
    command = " ".join([*env, "python benchmarks/quality.py", *sys.argv[1:]])
    for row in rows:
        row["command"] = command
        row["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        row["commit"] = commit()
    # Rows not re-run this time are kept from the previous run (each row carries its own command and date).
    store = args.output.with_suffix(".json")
    previous = json.loads(store.read_text()) if store.is_file() else []
    fresh = {(r["dataset"], r["engine"]) for r in rows}
    merged = [r for r in previous if (r["dataset"], r["engine"]) not in fresh] + rows
    merged.sort(key=lambda r: (list(DATASETS).index(r["dataset"]), ENGINES.index(r["engine"])))
    store.write_text(json.dumps(merged, indent=1))
    write_markdown(merged, command, args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
