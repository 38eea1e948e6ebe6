"""EASE fit cost against a plain numpy/scipy reference of the same algorithm, in the same run.

    python benchmarks/ease.py                       # Beauty (the largest catalogue here), 3 alternating rounds
    python benchmarks/ease.py --datasets ml-100k beauty --rounds 5

The reference is the textbook closed form, written the obvious way: a float32 Gram matrix XᵀX, then for every λ of
the engine's grid one Cholesky factorisation of XᵀX + λI and a solve against the identity (scipy ``cho_factor`` /
``cho_solve``), B = −P / diag(P), zero diagonal. Ours is ``recengine.engines.ease.ease_weights`` over the same grid,
and separately the engine's whole ``EASE.fit`` (the same weights plus one validation evaluation per λ to choose it).
Each measurement runs in a fresh subprocess so its peak RSS (max resident memory) is its own; the data set is read
and prepared before the clock starts, and its RSS is reported so the fit's own share can be read off. Rounds
alternate ours / reference so a noisy machine hurts both alike; medians are reported. Both paths' weights are
compared on a sample of rows (max absolute difference). Reads ``$RECENGINE_BENCH_DATA`` (default ``../shared/data``).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from child import child_result
from provenance import provenance_lines, write_report
from quality import DATASETS, ROOT, bench_root, load_dataset

MODES = ("ours", "reference", "fit")
SAMPLE_ROWS = 256  # rows of the λ=100 weights each path writes out for the equality check


def rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def reference_weights(gram: np.ndarray, lam: float) -> np.ndarray:
    """EASE by the book: Cholesky of XᵀX + λI, solve against I, scale columns by −1/diag, zero the diagonal."""
    from scipy.linalg import cho_factor, cho_solve

    n = gram.shape[0]
    a = gram + np.float32(lam) * np.eye(n, dtype=np.float32)
    p = cho_solve(cho_factor(a, overwrite_a=True), np.eye(n, dtype=np.float32), overwrite_b=True)
    b = p / -np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b


def run_one(dataset_name: str, mode: str, sample_path: Path) -> dict[str, Any]:
    """Inside the child process: prepare the data set, then time one way of fitting EASE over the engine's grid."""
    from recengine.data.dataset import TRAIN
    from recengine.engines.ease import EASE, ease_weights
    from recengine.settings import EaseSettings

    dataset = load_dataset(dataset_name)
    lambdas = EaseSettings().lambdas
    rss_data = rss_gb()
    sample = None
    t0 = time.perf_counter()
    if mode == "fit":
        EASE.fit(dataset, EaseSettings())
    else:
        x = dataset.train_matrix(max_split=TRAIN).astype(np.float32)
        gram = (x.T @ x).toarray()
        del x
        for lam in lambdas:
            w = ease_weights(gram, lam).numpy() if mode == "ours" else reference_weights(gram, lam)
            if lam == 100.0:
                sample = np.array(w[1 : SAMPLE_ROWS + 1])
            del w
    seconds = time.perf_counter() - t0
    if sample is not None:
        np.save(sample_path, sample)
    return {
        "dataset": dataset_name,
        "mode": mode,
        "n_items": dataset.n_items,
        "lambdas": lambdas,
        "seconds": seconds,
        "peak_rss_gb": rss_gb(),
        "rss_after_data_gb": rss_data,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["beauty"], choices=list(DATASETS))
    ap.add_argument("--rounds", type=int, default=3, help="Alternating rounds per mode; medians are reported.")
    ap.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "ease.md")
    ap.add_argument("--one", nargs=3, metavar=("DATASET", "MODE", "SAMPLE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_one(args.one[0], args.one[1], Path(args.one[2]))))
        return
    if not (bench_root() / "ml-100k").is_dir():
        sys.exit(f"benchmark data not found under {bench_root()} (set RECENGINE_BENCH_DATA)")
    table = []
    with tempfile.TemporaryDirectory() as tmp:
        for ds in args.datasets:
            runs: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
            for r in range(args.rounds):
                for mode in MODES if r % 2 == 0 else MODES[::-1]:
                    row = child_result(__file__, [ds, mode, str(Path(tmp) / f"{ds}-{mode}.npy")])
                    runs[mode].append(row)
                    print(f"{ds} round {r + 1} {mode}: {row['seconds']:.1f} s, {row['peak_rss_gb']:.2f} GB", flush=True)
            samples = {m: Path(tmp) / f"{ds}-{m}.npy" for m in MODES}
            ref = np.load(samples["reference"])
            diff = float(np.abs(np.load(samples["ours"]) - ref).max())
            med = {
                m: {k: statistics.median(r[k] for r in rows) for k in ("seconds", "peak_rss_gb", "rss_after_data_gb")}
                for m, rows in runs.items()
            }
            table.append((ds, runs["ours"][0], med, diff))
    lines = [
        "# EASE fit against a numpy/scipy reference",
        "",
        *provenance_lines(f"python benchmarks/ease.py {' '.join(sys.argv[1:])}"),
        f"- {args.rounds} alternating rounds per mode, each a fresh process; medians. λ grid = the engine's default.",
        "- reference: float32 XᵀX, per λ `scipy.linalg.cho_factor` + `cho_solve` against I (the textbook closed form)",
        "- ours: `recengine.engines.ease.ease_weights` per λ (one in-place LAPACK spotrf + spotri on one copy)",
        "- fit: the engine's `EASE.fit` — the same weights plus one validation NDCG@10 evaluation per λ to pick it",
        "- peak RSS includes the prepared data set (its RSS before fitting is in the last column)",
        "",
        "| data set | items | λ grid | mode | seconds (median) | peak RSS GB | RSS after data GB |"
        " ours ÷ reference (s / GB) | max abs diff of weights vs reference |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for ds, info, med, diff in table:
        ref = med["reference"]
        for mode in MODES:
            m = med[mode]
            ratio = f"{m['seconds'] / ref['seconds']:.2f} / {m['peak_rss_gb'] / ref['peak_rss_gb']:.2f}"
            lines.append(
                f"| {ds} | {info['n_items']} | {', '.join(f'{x:g}' for x in info['lambdas'])} | {mode} | "
                f"{m['seconds']:.1f} | {m['peak_rss_gb']:.2f} | {m['rss_after_data_gb']:.2f} | "
                f"{'—' if mode == 'reference' else ratio} | {'—' if mode != 'ours' else f'{diff:.2e}'} |"
            )
    text = write_report(args.output, "\n".join(lines) + "\n")
    print(text)


if __name__ == "__main__":
    main()
