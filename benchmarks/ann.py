"""ANN at catalogue scale: build time, memory, queries/s and recall@10 of the faiss indexes vs exact search.

Synthetic item vectors (default 1M × 64), L2-normalised, drawn around 2,000 cluster centres so that the data has the
neighbourhood structure trained embeddings have (uniform random vectors are the adversarial case for every ANN index).
Queries are perturbed item vectors, like user vectors that sit near the items they like.

    .venv/bin/python benchmarks/ann.py                    # writes benchmarks/results/ann.md
    .venv/bin/python benchmarks/ann.py --items 100000 --output -
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recengine.engines.index import ExactIndex, FaissIndex, VectorIndex, recall_at_k


def synthetic_vectors(n: int, d: int, n_clusters: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, d)).astype(np.float32)
    out = np.empty((n + 1, d), dtype=np.float32)
    out[0] = 0.0  # padding row, as in the engine
    chunk = 200_000
    for start in range(1, n + 1, chunk):
        stop = min(n + 1, start + chunk)
        which = rng.integers(0, n_clusters, size=stop - start)
        x = centres[which] + 0.6 * rng.standard_normal((stop - start, d)).astype(np.float32)
        out[start:stop] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def measure(
    name: str,
    build: Any,
    queries: np.ndarray,
    exact: VectorIndex,
    k: int,
    truth: np.ndarray | None = None,
    hard: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    before = rss_mib()
    t0 = time.perf_counter()
    index: VectorIndex = build()
    build_s = time.perf_counter() - t0
    mem = index.memory_bytes() / 2**20 if isinstance(index, FaissIndex) else index.size * queries.shape[1] * 4 / 2**20
    t0 = time.perf_counter()
    index.search(queries, k)
    batch_s = time.perf_counter() - t0
    single = queries[:200]
    t0 = time.perf_counter()
    for q in single:
        index.search(q[None, :], k)
    single_s = (time.perf_counter() - t0) / len(single)
    recall = recall_at_k(index, exact, queries, k, expected=truth) if index is not exact else 1.0
    recall_hard = 1.0
    if hard is not None and index is not exact:
        recall_hard = recall_at_k(index, exact, hard[0], k, expected=hard[1])
    row = {
        "index": name,
        "build_s": build_s,
        "index_mib": mem,
        "rss_delta_mib": rss_mib() - before,
        "batch_qps": len(queries) / batch_s,
        "single_ms": single_s * 1000,
        f"recall@{k}": recall,
        f"recall@{k} mixed": recall_hard,
    }
    print(row, file=sys.stderr, flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kinds", default="exact,ivf,hnsw")
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "ann.md"), help="'-' = stdout")
    args = parser.parse_args(argv)

    threads = torch.get_num_threads()
    vectors = synthetic_vectors(args.items, args.dim, n_clusters=2000, seed=args.seed)
    rng = np.random.default_rng(args.seed + 1)
    picks = rng.integers(1, args.items + 1, size=args.queries)
    queries = vectors[picks] + 0.3 * rng.standard_normal((args.queries, args.dim)).astype(np.float32) / np.sqrt(
        args.dim
    )
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    # Harder, user-like queries: the mean of three random items (several interests) plus noise.
    mixed = vectors[rng.integers(1, args.items + 1, size=(args.queries, 3))].mean(1)
    mixed += 0.5 * rng.standard_normal(mixed.shape).astype(np.float32) / np.sqrt(args.dim)
    mixed /= np.linalg.norm(mixed, axis=1, keepdims=True)
    exact = ExactIndex(vectors)
    truth, _ = exact.search(queries, args.k)  # exact top-k once, for every recall figure
    hard = (mixed, exact.search(mixed, args.k)[0])
    kinds = args.kinds.split(",")
    rows = []
    if "exact" in kinds:
        rows.append(measure("exact (torch matmul)", lambda: exact, queries, exact, args.k))
    if "ivf" in kinds:
        rows.append(
            measure(
                "faiss IVF-Flat (nlist 4√n, nprobe 16)",
                lambda: FaissIndex(vectors, kind="ivf"),
                queries,
                exact,
                args.k,
                truth,
                hard,
            )
        )
    if "hnsw" in kinds:
        built: list[FaissIndex] = []

        def build_hnsw() -> FaissIndex:
            built.append(FaissIndex(vectors, kind="hnsw"))
            return built[0]

        rows.append(measure("faiss HNSW-Flat (M 32, efC 80, efS 128)", build_hnsw, queries, exact, args.k, truth, hard))
        # Recall against query time on the same graph: efSearch is a search-time knob, no rebuild.
        for ef in (256, 512):
            built[0].index.hnsw.efSearch = ef
            row = measure(f"same HNSW graph, efSearch {ef}", lambda: built[0], queries, exact, args.k, truth, hard)
            rows.append({**row, "build_s": 0.0, "rss_delta_mib": 0.0})
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    omp = os.environ.get("OMP_NUM_THREADS")
    cmd = (f"OMP_NUM_THREADS={omp} " if omp else "") + "python benchmarks/ann.py "
    cmd += " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "# ANN benchmark: faiss indexes vs exact search",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPU cores ({platform.processor() or 'unknown cpu'}), "
        f"{threads} torch threads; cores shared with other jobs, so timings are noisy",
        f"- command: `{cmd.strip()}`",
        f"- data: {args.items:,} synthetic items × {args.dim} dims (L2-normalised, 2,000 clusters), "
        f"{args.queries} queries of each kind, k = {args.k}: near-item queries (an item plus small noise) and "
        "mixed queries (mean of three random items plus noise, like a user with several interests)",
        f"- peak RSS of the whole run: {peak:.0f} MiB",
        "",
        f"| index | build s | index MiB | RSS Δ MiB | queries/s (batch of {args.queries}) | ms / single query "
        f"| recall@{args.k} vs exact, near-item queries | recall@{args.k}, mixed queries |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['index']} | {r['build_s']:.1f} | {r['index_mib']:.0f} | {r['rss_delta_mib']:.0f} | "
            f"{r['batch_qps']:.0f} | {r['single_ms']:.2f} | {r[f'recall@{args.k}']:.3f} | "
            f"{r[f'recall@{args.k} mixed']:.3f} |"
        )
    text = "\n".join(lines) + "\n"
    if args.output == "-":
        print(text)
    else:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text)
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
