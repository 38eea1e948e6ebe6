"""Maximum-inner-product search over item vectors: exact for small catalogues, faiss ANN above a threshold.

Rows are item indices: row ``i`` of the index is item ``i`` (row 0, the padding item, is a zero vector that is never
returned). Vectors are expected L2-normalised, so inner product = cosine.

    index = build_index(vectors, ann_threshold=50_000, kind="ivf")    # ExactIndex or FaissIndex
    ids, scores = index.search(queries, k=10, exclude=[history, ...])  # (B, k) each, best first, 0 / -inf padding
    index.add(new_vectors)                                           # appended: new items get the next indices
    recall_at_k(index, exact, queries, 10)                          # share of the exact top-k the ANN finds
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

import numpy as np
import torch

from recengine.errors import ConfigError

IndexKind = Literal["exact", "hnsw", "ivf"]


class ReadWriteLock:
    """Any number of readers at once, or one writer; a waiting writer holds back new readers (no starvation)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writing or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            while self._writing or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


class VectorIndex(ABC):
    kind: IndexKind

    @property
    @abstractmethod
    def size(self) -> int:
        """Rows in the index, the padding row included."""

    @abstractmethod
    def add(self, vectors: np.ndarray) -> None:
        """Append rows (n, d); they get the indices size, size + 1, …"""

    @abstractmethod
    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw top-k (B, k) ids and scores; ids -1 where fewer than k rows were found."""

    def search(
        self, queries: np.ndarray, k: int, exclude: Sequence[np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows per query, best first, without row 0 and the rows in ``exclude[i]``.

        Rows that cannot be filled are index 0 with score -inf (the Engine contract's padding).
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        bsz = queries.shape[0]
        k = max(0, min(int(k), self.size - 1))
        out_ids = np.zeros((bsz, k), dtype=np.int64)
        out_scores = np.full((bsz, k), -np.inf, dtype=np.float32)
        if k == 0 or bsz == 0:
            return out_ids, out_scores
        excl = [np.asarray(e, dtype=np.int64) for e in exclude] if exclude is not None else [np.zeros(0, np.int64)]
        # Over-fetch by the longest exclusion list, so filtering still leaves k results.
        fetch = min(self.size, k + 1 + max(len(np.unique(e)) for e in excl))
        ids, scores = self._search(queries, fetch)
        for i in range(bsz):
            drop = excl[i] if exclude is not None and i < len(excl) else np.zeros(0, np.int64)
            keep = (ids[i] > 0) & ~np.isin(ids[i], drop)
            row_ids, row_scores = ids[i][keep][:k], scores[i][keep][:k]
            out_ids[i, : len(row_ids)] = row_ids
            out_scores[i, : len(row_ids)] = row_scores
        return out_ids, out_scores


class ExactIndex(VectorIndex):
    """Brute-force matrix product: exact, and fastest below some tens of thousands of items."""

    kind: IndexKind = "exact"

    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))

    @property
    def size(self) -> int:
        return int(self.vectors.shape[0])

    def add(self, vectors: np.ndarray) -> None:
        new = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
        self.vectors = torch.cat([self.vectors, new])

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        # Blocks of up to 1,024 queries × 16,384 items keep each score block at 64 MiB; every item chunk keeps
        # its own top-k and the winners are merged, so the item matrix is read once per query block (reading
        # it once per handful of queries made a 1M-item search memory-bound at ~30 queries/s).
        vectors = self.vectors
        n = int(vectors.shape[0])
        q_block, i_block = 1024, max(k, 16_384)
        ids_out, values_out = [], []
        for qs in range(0, queries.shape[0], q_block):
            q = torch.from_numpy(queries[qs : qs + q_block])
            best_v = torch.empty((q.shape[0], 0))
            best_i = torch.empty((q.shape[0], 0), dtype=torch.long)
            for start in range(0, n, i_block):
                scores = q @ vectors[start : start + i_block].T  # (b, chunk)
                if start == 0:
                    scores[:, 0] = -torch.inf
                values, ids = torch.topk(scores, min(k, scores.shape[1]), dim=1)
                best_v, order = torch.topk(torch.cat([best_v, values], 1), min(k, best_v.shape[1] + values.shape[1]), 1)
                best_i = torch.gather(torch.cat([best_i, ids + start], 1), 1, order)
            ids_out.append(best_i.numpy())
            values_out.append(best_v.numpy())
        return np.concatenate(ids_out), np.concatenate(values_out)


class FaissIndex(VectorIndex):
    """faiss HNSW (graph; no training, good recall, more memory) or IVF-Flat (clusters; fast build)."""

    def __init__(
        self,
        vectors: np.ndarray,
        kind: Literal["hnsw", "ivf"] = "hnsw",
        hnsw_m: int = 32,
        ef_construction: int = 80,
        ef_search: int = 128,
        nlist: int | None = None,
        nprobe: int = 16,
        seed: int = 0,
    ) -> None:
        import faiss

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n, d = vectors.shape
        self.kind = kind
        self.dim = d
        index: faiss.Index
        if kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = ef_construction
            index.hnsw.efSearch = ef_search
        elif kind == "ivf":
            # 4√n lists, but never fewer than ~40 training points per list (k-means needs them).
            nlist = nlist or max(1, min(65_536, int(4 * np.sqrt(max(n, 1))), n // 40))
            quantizer = faiss.IndexFlatIP(d)
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
            # Training on a sample is standard: 64 points per centroid are plenty for k-means.
            rng = np.random.default_rng(seed)
            sample = vectors[rng.choice(n, size=min(n, 64 * nlist), replace=False)] if n > 64 * nlist else vectors
            index.train(sample)
            index.nprobe = min(nprobe, nlist)
        else:
            raise ConfigError(f"ann_kind must be 'hnsw' or 'ivf', got {kind!r}")
        index.add(vectors)
        self.index = index
        # faiss indexes are not safe to search while ``add`` changes them (serving threads search while an
        # admin call adds items): searches share the lock, an add takes it alone.
        self._lock = ReadWriteLock()

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    def add(self, vectors: np.ndarray) -> None:
        with self._lock.write():
            self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        with self._lock.read():
            scores, ids = self.index.search(queries, k)
        scores = np.where(ids < 0, -np.inf, scores).astype(np.float32)
        return ids.astype(np.int64), scores

    def memory_bytes(self) -> int:
        import faiss

        return int(faiss.serialize_index(self.index).size)


def build_index(vectors: np.ndarray, ann_threshold: int, kind: Literal["hnsw", "ivf"] = "ivf") -> VectorIndex:
    """Exact search up to ``ann_threshold`` items (rows minus the padding row), faiss ``kind`` above it."""
    if vectors.shape[0] - 1 > ann_threshold:
        return FaissIndex(vectors, kind=kind)
    return ExactIndex(vectors)


def recall_at_k(
    index: VectorIndex, exact: VectorIndex, queries: np.ndarray, k: int, expected: np.ndarray | None = None
) -> float:
    """Mean share of the exact top-``k`` that ``index`` returns in its own top-``k``.

    ``expected`` (B, k) is the exact answer when the caller already has it (exact search is the slow part).
    """
    got, _ = index.search(queries, k)
    want = expected if expected is not None else exact.search(queries, k)[0]
    hits = [
        len(np.intersect1d(g[g > 0], w[w > 0])) / max(1, int((w > 0).sum())) for g, w in zip(got, want, strict=True)
    ]
    return float(np.mean(hits)) if hits else 1.0
