"""Quality benchmark: every engine on the real data sets, under the published protocol.

    python benchmarks/quality.py                                  # all engines, both data sets
    python benchmarks/quality.py --engines popularity ease --datasets beauty

Leave-one-out by time, full ranking over all items, history excluded (``recengine.evaluation``). Each (data set,
engine, seed) runs in its own subprocess so that its peak memory (max RSS) is its own. Every configuration choice
inside a run (epochs, λ) is made on the validation split; the final model is then scored once on validation and once
on test, and both are reported. Engines trained by gradient descent run once per ``--seeds`` seed (the training
seed: initialisation, batches, dropout); the closed-form ones are deterministic and run once. The table shows mean ±
standard deviation over seeds. Rows are stored per seed in quality.json as soon as each finishes, so an interrupted
run resumes with ``--resume`` (rows already measured at this commit are kept, not re-run). Figures go to
``benchmarks/results/quality.md``, with the machine, the command, the commit and the date. Never run in CI: it reads
``$RECENGINE_BENCH_DATA`` (default ``../shared/data``), whose terms forbid copying it into the repository.
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

from child import child_result
from provenance import commit, provenance_lines, write_report

ROOT = Path(__file__).resolve().parents[1]
DATASETS = {
    # name → (path under the bench folder, reader format, item metadata file or None)
    "beauty": ("amazon-beauty/Beauty.txt", "sequences", None),
    "ml-100k": ("ml-100k/u.data", "movielens", "ml-100k/u.item"),
}
ENGINES = ("popularity", "ease", "ease@100", "transformer", "neural", "ranker")
#: Engines whose result depends on the training seed (the others are closed-form: one run stands for every seed).
#: The ranker is, through its base engines (trained in the same child, with the same seed).
SEEDED = ("transformer", "neural", "ranker")
#: The shipped ``training.seed``: rows measured before seeds were recorded used it.
DEFAULT_SEED = 42
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


def run_one(dataset_name: str, engine_name: str, seed: int = DEFAULT_SEED) -> dict[str, Any]:
    """Runs inside the child process: prepare, fit (choosing on validation), evaluate on validation and test, time."""
    import torch

    from recengine.evaluation import evaluate
    from recengine.settings import load_settings
    from recengine.training.run import fit

    settings = load_settings(None)
    settings = settings.model_copy(update={"training": settings.training.model_copy(update={"seed": seed})})
    t0 = time.perf_counter()
    dataset = load_dataset(dataset_name)
    prep_s = time.perf_counter() - t0
    base, overrides = VARIANTS.get(engine_name, (engine_name, {}))
    section = getattr(settings.engines, base).model_copy(update=overrides)
    curve = test_curve_callback(dataset) if base in ("transformer", "neural") else None
    bases_fit_s, in_sample = None, None
    with tempfile.TemporaryDirectory() as tmp:
        if base == "ranker":
            bases_fit_s = train_bases(dataset, settings, section.base_engines, Path(tmp))
        t0 = time.perf_counter()
        extra = {"callbacks": [curve]} if curve is not None else {}
        engine = fit(base, dataset, section, settings.training, Path(tmp), **extra)
        fit_s = time.perf_counter() - t0 - (curve.excluded if curve is not None else 0.0)
    valid = evaluate(engine.score, dataset, split="valid", ks=(10, 20))
    if engine.learns_from_validation:
        # The ranker learns from the validation targets: its own validation figures are in-sample. Its held-out
        # validation figure is the K-fold cross-validated NDCG@10 over validation users; HR has no such estimate.
        in_sample = valid
        valid = {"ndcg@10": engine.metrics.get("cv_ndcg@10"), "hr@10": None, "ndcg@20": None, "hr@20": None}
    t0 = time.perf_counter()
    metrics = evaluate(engine.score, dataset, split="test", ks=(10, 20))
    eval_s = time.perf_counter() - t0
    torch.set_num_threads(1)  # one request = one thread, as the server runs it
    row: dict[str, Any] = {
        "dataset": dataset_name,
        "engine": engine_name,
        "seed": seed,
        **{k: metrics[k] for k in ("hr@10", "ndcg@10", "hr@20", "ndcg@20", "mrr@10", "coverage@10")},
        **{f"valid_{k}": valid[k] for k in ("hr@10", "ndcg@10", "hr@20", "ndcg@20")},
        "n_users": metrics["n_users"],
        "prepare_s": prep_s,
        "fit_s": fit_s,
        "eval_s": eval_s,
        **({"bases_fit_s": bases_fit_s, "valid_in_sample_ndcg@10": in_sample["ndcg@10"]} if in_sample else {}),
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


def train_bases(dataset: Any, settings: Any, names: list[str], root: Path) -> float:
    """The ranker's base engines, fitted on ``dataset`` with the shipped settings (selection on validation) and
    made CURRENT under ``root``, where the ranker's fit reads them; returns their total fit seconds."""
    from recengine.engines.artifact import set_current, version_dir
    from recengine.training.run import fit

    t0 = time.perf_counter()
    for name in names:
        model = fit(name, dataset, getattr(settings.engines, name), settings.training, root)
        set_current(model.save(version_dir(root, name)))
    return time.perf_counter() - t0


def fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return "—" if value is None else str(value)


def seed_of(row: dict[str, Any]) -> int:
    return int(row.get("seed", DEFAULT_SEED))


def mean_sd(rows: list[dict[str, Any]], key: str, digits: int = 4) -> str:
    """``mean ± sd`` over the rows that have ``key`` (sd over seeds, n − 1; a single run shows its value alone)."""
    values = [float(r[key]) for r in rows if r.get(key) is not None]
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def grouped(rows: list[dict[str, Any]]) -> list[tuple[str, str, list[dict[str, Any]]]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["engine"]), []).append(r)
    order = sorted(groups, key=lambda k: (list(DATASETS).index(k[0]), ENGINES.index(k[1])))
    return [(ds, e, sorted(groups[(ds, e)], key=seed_of)) for ds, e in order]


def write_markdown(rows: list[dict[str, Any]], command: str, out: Path) -> None:
    lines = [
        "# Quality benchmark",
        "",
        *provenance_lines(command),
        "- rows not re-run by that command are kept from earlier runs: each row's own commit is in the tables, its"
        " command and date in quality.json",
        "- protocol: leave-one-out by time, full ranking over all items, history excluded; ties in scores broken"
        " uniformly at random in expectation (see `recengine.evaluation`)",
        "- selection (epochs, λ) on the validation split only; the selected model is scored once on validation and once"
        " on test. Seeded engines (transformer, neural): mean ± sd over the seeds listed (training.seed); popularity"
        " and EASE are closed-form (one run)",
        "- ranker: its base engines are trained first in the same child (same seed, shipped settings); its valid"
        " NDCG@10 is the K-fold cross-validated estimate over validation users (it learns from the validation targets,"
        " so its in-sample figure is in quality.json only), and its fit s leaves out the base engines' (bases_fit_s)",
        "- peak RSS is the max resident memory of the process that prepared, trained and evaluated that one row",
        "- latency: one `recommend(k=10)` call for one history, one thread, 300 test users",
        "",
        "| data set | engine | seeds | valid NDCG@10 | valid HR@10 | test HR@10 | test NDCG@10 | test HR@20 |"
        " test NDCG@20 | coverage@10 | fit s | peak RSS GB | latency p50 / p99 ms | commit |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for ds, engine, group in grouped(rows):
        seeds = ", ".join(str(seed_of(r)) for r in group) if engine in SEEDED else "—"
        commits = ", ".join(sorted({str(r.get("commit", "not recorded")) for r in group}))
        lines.append(
            f"| {ds} | {engine} | {seeds} | {mean_sd(group, 'valid_ndcg@10')} | {mean_sd(group, 'valid_hr@10')} | "
            f"{mean_sd(group, 'hr@10')} | {mean_sd(group, 'ndcg@10')} | {mean_sd(group, 'hr@20')} | "
            f"{mean_sd(group, 'ndcg@20')} | {mean_sd(group, 'coverage@10', 3)} | {mean_sd(group, 'fit_s', 1)} | "
            f"{mean_sd(group, 'peak_rss_gb', 2)} | {mean_sd(group, 'latency_p50_ms', 2)} / "
            f"{mean_sd(group, 'latency_p99_ms', 2)} | {commits} |"
        )
    lines += [
        "",
        "## Each run",
        "",
        "| data set | engine | seed | valid NDCG@10 | test HR@10 | test NDCG@10 | fit s | eval s | training | commit |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for ds, engine, group in grouped(rows):
        for r in group:
            training = ", ".join(f"{k}={fmt(v, 3)}" for k, v in r.get("training", {}).items())
            seed = seed_of(r) if engine in SEEDED else "—"
            lines.append(
                f"| {ds} | {engine} | {seed} | {fmt(r.get('valid_ndcg@10'))} | {fmt(r['hr@10'])} | "
                f"{fmt(r['ndcg@10'])} | {fmt(r['fit_s'], 1)} | {fmt(r['eval_s'], 1)} | {training} | "
                f"{r.get('commit', 'not recorded')} |"
            )
    lines += [
        "",
        "## Reference figures (../shared/data/README.md, same protocol)",
        "",
        "| data set | model | HR@10 | NDCG@10 | HR@20 | NDCG@20 | ours − reference (NDCG@10) |",
        "|---|---|---|---|---|---|---|",
    ]
    ours = {(ds, e): float(np.mean([r["ndcg@10"] for r in g])) for ds, e, g in grouped(rows)}
    for (ds, model), ref in REFERENCE.items():
        mine = ours.get((ds, model))
        delta = f"{(mine - ref['ndcg@10']) / ref['ndcg@10'] * 100:+.1f} %" if mine is not None else "—"
        lines.append(
            f"| {ds} | {model} | {ref['hr@10']:.4f} | {ref['ndcg@10']:.4f} | {ref['hr@20']:.4f} | "
            f"{ref['ndcg@20']:.4f} | {delta} |"
        )
    write_report(out, "\n".join(lines) + "\n")


def key_of(row: dict[str, Any]) -> tuple[str, str, int]:
    return (row["dataset"], row["engine"], seed_of(row) if row["engine"] in SEEDED else DEFAULT_SEED)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[DEFAULT_SEED, DEFAULT_SEED + 1, DEFAULT_SEED + 2])
    parser.add_argument("--resume", action="store_true", help="Keep rows already measured at this commit.")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "quality.md")
    parser.add_argument("--one", nargs="+", metavar="DATASET ENGINE [SEED]", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        ds, engine, *seed = args.one
        print("RESULT " + json.dumps(run_one(ds, engine, int(seed[0]) if seed else DEFAULT_SEED)))
        return
    if not (bench_root() / "ml-100k").is_dir():
        sys.exit(f"benchmark data not found under {bench_root()} (set RECENGINE_BENCH_DATA)")
    env = [f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("RECENGINE_") and "BENCH" not in k]
    command = " ".join([*env, "python benchmarks/quality.py", *sys.argv[1:]])
    here = commit()
    store = args.output.with_suffix(".json")
    stored: dict[tuple[str, str, int], dict[str, Any]] = {}
    if store.is_file():
        stored = {key_of(r): r for r in json.loads(store.read_text())}
    for ds in args.datasets:
        for engine in args.engines:
            for seed in args.seeds if engine in SEEDED else [DEFAULT_SEED]:
                key = (ds, engine, seed)
                if args.resume and stored.get(key, {}).get("commit") == here:
                    print(f"== {ds} / {engine} / seed {seed}: kept (measured at {here})", flush=True)
                    continue
                print(f"== {ds} / {engine} / seed {seed}", flush=True)
                row = child_result(__file__, [ds, engine, str(seed)])
                row.update(command=command, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), commit=here)
                print(
                    f"   valid ndcg@10={row['valid_ndcg@10']:.4f}  test ndcg@10={row['ndcg@10']:.4f} "
                    f"hr@10={row['hr@10']:.4f} fit={row['fit_s']:.1f}s",
                    flush=True,
                )
                # Stored at once: an interrupted run loses only the row in progress.
                stored[key] = row
                store.write_text(json.dumps(sorted(stored.values(), key=key_of), indent=1))
                write_markdown(list(stored.values()), command, args.output)
    write_markdown(list(stored.values()), command, args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
