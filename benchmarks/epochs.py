"""Seconds per training epoch of the transformer and the neural engine on the same data, in the same run.

    python benchmarks/epochs.py                                # Beauty and ML-100K, 3 alternating rounds
    python benchmarks/epochs.py --datasets beauty --epochs 3 --rounds 5 --threads 2

Each measurement is a fresh process running ``training.run.fit`` with the shipped settings for ``--epochs`` epochs
(the validation after each epoch included, as in quality.md's ``seconds_per_epoch``); rounds alternate the engines
so that a noisy machine hurts both alike, and medians are reported with the neural ÷ transformer ratio (issue 19's
target: ≤ 1). Reads ``$RECENGINE_BENCH_DATA`` (default ``../shared/data``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from child import child_result
from provenance import provenance_lines, write_report
from quality import DATASETS, ROOT, bench_root, load_dataset

ENGINES = ("transformer", "neural")


def run_one(dataset_name: str, engine: str, epochs: int) -> dict[str, Any]:
    from recengine.settings import load_settings
    from recengine.training.run import fit

    settings = load_settings(None)
    dataset = load_dataset(dataset_name)
    training = settings.training.with_overrides(epochs=epochs, patience=None)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        trained = fit(engine, dataset, getattr(settings.engines, engine), training, Path(tmp))
        seconds = time.perf_counter() - t0
    m = trained.metrics
    return {
        "dataset": dataset_name,
        "engine": engine,
        "seconds_per_epoch": m["seconds_per_epoch"],
        "epochs_run": m["epochs_run"],
        "fit_s": seconds,
        "valid_ndcg@10": m["valid_ndcg@10"],
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["beauty", "ml-100k"], choices=list(DATASETS))
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="training.num_threads of every run")
    ap.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "epochs.md")
    ap.add_argument("--one", nargs=3, metavar=("DATASET", "ENGINE", "EPOCHS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_one(args.one[0], args.one[1], int(args.one[2]))))
        return
    if not (bench_root() / "ml-100k").is_dir():
        sys.exit(f"benchmark data not found under {bench_root()} (set RECENGINE_BENCH_DATA)")
    env = {**os.environ, "RECENGINE_TRAINING__NUM_THREADS": str(args.threads)}
    rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for ds in args.datasets:
        for r in range(args.rounds):
            for engine in ENGINES if r % 2 == 0 else ENGINES[::-1]:
                row = child_result(__file__, [ds, engine, str(args.epochs)], env)
                rows.setdefault((ds, engine), []).append(row)
                print(f"{ds} round {r + 1} {engine}: {row['seconds_per_epoch']:.1f} s/epoch", flush=True)
    lines = [
        "# Seconds per training epoch: transformer and neural engine",
        "",
        *provenance_lines(f"python benchmarks/epochs.py {' '.join(sys.argv[1:])}".strip(), threads=args.threads),
        f"- {args.rounds} alternating rounds, each a fresh process training {args.epochs} epochs with the shipped"
        " settings; medians. An epoch's seconds include its validation (as quality.md's `seconds_per_epoch`).",
        "",
        "| data set | engine | s / epoch (median) | rounds | peak RSS GB | neural ÷ transformer |",
        "|---|---|---|---|---|---|",
    ]
    for ds in args.datasets:
        med = {e: statistics.median(r["seconds_per_epoch"] for r in rows[(ds, e)]) for e in ENGINES}
        for e in ENGINES:
            each = ", ".join(f"{r['seconds_per_epoch']:.1f}" for r in rows[(ds, e)])
            rss = statistics.median(r["peak_rss_gb"] for r in rows[(ds, e)])
            ratio = f"{med['neural'] / med['transformer']:.2f}" if e == "neural" else "—"
            lines.append(f"| {ds} | {e} | {med[e]:.1f} | {each} | {rss:.2f} | {ratio} |")
    print(write_report(args.output, "\n".join(lines) + "\n"))


if __name__ == "__main__":
    main()
