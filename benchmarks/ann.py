"""ANN at catalogue scale: build time, memory, queries/s and recall@10 of the faiss indexes vs exact search.

Synthetic item vectors (default 1M × 64), L2-normalised, drawn around 2,000 cluster centres so that the data has the
neighbourhood structure trained embeddings have (uniform random vectors are the adversarial case for every ANN index).
Queries are perturbed item vectors, like user vectors that sit near the items they like.

A second table times filtered requests (a category filter, as ``include_categories`` / ``exclude_categories`` reach
the index) against the unfiltered request of the same run: a category is the items of a share of the clusters (1 %
and 20 % of the items by default), each query excludes a 20-item history, and recall@10 is against exact scoring of
the same filter. Rows marked "forced" override the index's route choice (``filtered_route``) to show the other one.

A section of the output file that starts with ``provenance.NOTES_HEADING`` is hand-written: it is kept as it is when the
file is regenerated (edit it by hand to match new figures).

    .venv/bin/python benchmarks/ann.py                    # writes benchmarks/results/ann.md
    .venv/bin/python benchmarks/ann.py --items 100000 --output -
    .venv/bin/python benchmarks/ann.py --kinds exact,ivf  # without the HNSW rows (its build takes minutes)
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from provenance import provenance_lines, write_report
from recengine.engines.index import ExactIndex, FaissIndex, VectorIndex, recall_at_k


def synthetic_vectors(n: int, d: int, n_clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n + 1, d) unit vectors, row 0 the zero padding row, and each row's cluster (-1 for the padding row)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, d)).astype(np.float32)
    out = np.empty((n + 1, d), dtype=np.float32)
    out[0] = 0.0  # padding row, as in the engine
    labels = np.full(n + 1, -1, dtype=np.int64)
    chunk = 200_000
    for start in range(1, n + 1, chunk):
        stop = min(n + 1, start + chunk)
        which = rng.integers(0, n_clusters, size=stop - start)
        labels[start:stop] = which
        x = centres[which] + 0.6 * rng.standard_normal((stop - start, d)).astype(np.float32)
        out[start:stop] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out, labels


def category(labels: np.ndarray, n_clusters: int, share: float, seed: int) -> np.ndarray:
    """The items (sorted rows) of a random ``share`` of the clusters: a category sits in one region of the space,
    as a trained model's categories do, so most users are far from most of it."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(n_clusters, size=max(1, round(share * n_clusters)), replace=False)
    return np.flatnonzero(np.isin(labels, chosen)).astype(np.int64)


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


def filtered_truth(
    vectors: torch.Tensor, queries: np.ndarray, k: int, allowed: np.ndarray, histories: list[np.ndarray]
) -> np.ndarray:
    """Exact top-``k`` of each query among ``allowed`` rows less its history (B, k), by blocks of 16 queries."""
    sub = vectors[torch.from_numpy(allowed)]
    out = []
    for start in range(0, len(queries), 16):
        scores = torch.from_numpy(queries[start : start + 16]) @ sub.T
        for j, h in enumerate(histories[start : start + 16]):
            pos = np.searchsorted(allowed, h)  # histories are sorted; their rows among the allowed ones
            inside = pos < allowed.size
            pos = pos[inside]
            scores[j, torch.from_numpy(pos[allowed[pos] == h[inside]])] = -torch.inf
        out.append(allowed[torch.topk(scores, k, dim=1).indices.numpy()])
    return np.concatenate(out)


@contextmanager
def forced_route(index: VectorIndex, route: str | None) -> Iterator[None]:
    """Override the index's choice between exact scoring of a filtered row's candidates and a faiss selector."""
    if route is None:
        yield
        return
    index.filtered_route = lambda n_allowed, n_dropped: route  # type: ignore[method-assign,assignment,return-value]
    try:
        yield
    finally:
        del index.filtered_route


def measure_filtered(
    index_name: str,
    request: str,
    index: VectorIndex,
    queries: np.ndarray,
    histories: list[np.ndarray],
    k: int,
    truth: np.ndarray,
    allow: np.ndarray | None = None,
    exclude: np.ndarray | None = None,
    route: str | None = None,
    n_allowed: int | None = None,
) -> dict[str, Any]:
    """Latency of single filtered requests (p50/p99 of 200), queries/s of one batch of all, recall vs ``truth``."""
    n = len(queries)
    excl = [h if exclude is None else np.concatenate([h, exclude]) for h in histories]
    allows = None if allow is None else [allow] * n
    with forced_route(index, route):
        t0 = time.perf_counter()
        got, _ = index.search(queries, k, exclude=excl, allow=allows)
        batch_s = time.perf_counter() - t0
        times = []
        for i in range(min(200, n)):
            t0 = time.perf_counter()
            index.search(queries[i : i + 1], k, exclude=excl[i : i + 1], allow=None if allows is None else allows[:1])
            times.append(time.perf_counter() - t0)
    ms = np.asarray(times) * 1000
    recall = float(np.mean([len(np.intersect1d(g[g > 0], w)) / k for g, w in zip(got, truth, strict=True)]))
    full = float(np.mean((got > 0).sum(1) == k))
    if route is None:
        if allow is None and exclude is None:
            how = "one batched search (over-fetch by the history)"
        elif index.filtered_route(None if allow is None else allow.size, len(excl[0])) == "exact":
            how = "exact scoring of the allowed items"
        else:
            how = "faiss with an IDSelector"
    else:
        how = {"selector": "forced: faiss with an IDSelector", "exact": "forced: exact scoring"}[route]
    row = {
        "index": index_name,
        "request": request,
        "allowed": n_allowed if n_allowed is not None else index.size - 1,
        "route": how,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "batch_qps": n / batch_s,
        f"recall@{k}": recall,
        "full": full,
    }
    print(row, file=sys.stderr, flush=True)
    return row


def filtered_rows(
    name: str,
    index: VectorIndex,
    vectors: np.ndarray,
    labels: np.ndarray,
    n_clusters: int,
    queries: np.ndarray,
    histories: list[np.ndarray],
    k: int,
    shares: list[float],
    seed: int,
    compare: bool,
) -> list[dict[str, Any]]:
    """The unfiltered request and, per share, include- and exclude-category requests on ``index``; with ``compare``
    also each include request through the route the index did not choose."""
    vt = torch.from_numpy(vectors)
    everything = np.arange(1, vectors.shape[0], dtype=np.int64)
    rows = [
        measure_filtered(
            name, "unfiltered", index, queries, histories, k, filtered_truth(vt, queries, k, everything, histories)
        )
    ]
    for j, share in enumerate(shares):
        items = category(labels, n_clusters, share, seed + 10 + j)
        label = f"{share:.0%} category"
        common = (index, queries, histories, k, filtered_truth(vt, queries, k, items, histories))
        rows.append(measure_filtered(name, f"include {label}", *common, allow=items, n_allowed=items.size))
        if compare:
            other = "selector" if index.filtered_route(items.size, len(histories[0])) == "exact" else "exact"
            rows.append(
                measure_filtered(name, f"include {label}", *common, allow=items, route=other, n_allowed=items.size)
            )
        rest = np.setdiff1d(everything, items, assume_unique=True)
        common = (index, queries, histories, k, filtered_truth(vt, queries, k, rest, histories))
        rows.append(measure_filtered(name, f"exclude {label}", *common, exclude=items, n_allowed=rest.size))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kinds", default="exact,ivf,hnsw", help="indexes to build; leave out hnsw to skip its rows")
    parser.add_argument("--shares", default="0.01,0.2", help="category sizes of the filtered requests, ''=none")
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "ann.md"), help="'-' = stdout")
    args = parser.parse_args(argv)

    threads = torch.get_num_threads()
    n_clusters = 2000
    vectors, labels = synthetic_vectors(args.items, args.dim, n_clusters=n_clusters, seed=args.seed)
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
    shares = [float(x) for x in args.shares.split(",") if x]
    # Filtered requests are user-like: the mixed queries, each with a history of 20 items it must not get back.
    histories = [np.sort(rng.choice(np.arange(1, args.items + 1), size=20, replace=False)) for _ in range(len(mixed))]
    rows = []
    filtered: list[dict[str, Any]] = []
    if "exact" in kinds:
        rows.append(measure("exact (torch matmul)", lambda: exact, queries, exact, args.k))
    if "ivf" in kinds:
        ivf_built: list[FaissIndex] = []

        def build_ivf() -> FaissIndex:
            ivf_built.append(FaissIndex(vectors, kind="ivf"))
            return ivf_built[0]

        name = "faiss IVF-Flat (nlist 4√n, nprobe 16)"
        rows.append(measure(name, build_ivf, queries, exact, args.k, truth, hard))
        if shares:
            filtered += filtered_rows(
                "IVF", ivf_built[0], vectors, labels, n_clusters, mixed, histories, args.k, shares, args.seed, True
            )
        ivf_built.clear()  # its memory back before the HNSW build
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
        if shares:
            built[0].index.hnsw.efSearch = 128
            filtered += filtered_rows(
                "HNSW (efS 128)", built[0], vectors, labels, n_clusters, mixed, histories, args.k, shares, args.seed,
                False,
            )  # fmt: skip
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    omp = os.environ.get("OMP_NUM_THREADS")
    cmd = (f"OMP_NUM_THREADS={omp} " if omp else "") + "python benchmarks/ann.py "
    cmd += " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "# ANN benchmark: faiss indexes vs exact search",
        "",
        *provenance_lines(cmd, threads=threads),
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
    if filtered:
        lines += [
            "",
            "## Filtered requests",
            "",
            f"Mixed (user-like) queries, each excluding a 20-item history; a category is the items of a random share "
            f"of the {n_clusters:,} clusters. Milliseconds per single request (p50 / p99 of 200, one at a time), "
            f"queries/s for one batch of {len(mixed)}, recall@{args.k} against exact scoring of the same filter, and "
            f"the share of answers with all {args.k} items. The unfiltered row is the same queries without a filter.",
            "",
            f"| index | request | allowed items | route | ms p50 | ms p99 | queries/s (batch of {len(mixed)}) "
            f"| recall@{args.k} vs exact filtered | answers with {args.k} items |",
            "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in filtered:
            lines.append(
                f"| {r['index']} | {r['request']} | {r['allowed']:,} | {r['route']} | {r['p50_ms']:.2f} | "
                f"{r['p99_ms']:.2f} | {r['batch_qps']:.0f} | {r[f'recall@{args.k}']:.3f} | {r['full']:.3f} |"
            )
    text = "\n".join(lines) + "\n"
    print(write_report(Path(args.output), text) if args.output != "-" else text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
