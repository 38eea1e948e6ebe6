"""Maximum-inner-product search over item vectors: exact for small catalogues, faiss ANN above a threshold.

Rows are item indices: row ``i`` of the index is item ``i`` (row 0, the padding item, is a zero vector that is never
returned). Vectors are expected L2-normalised, so inner product = cosine.

Filters are applied inside the search, never after it: an unfiltered row (or one that excludes only a short list,
its history) is one batched top-k over-fetched by that list; a row with an allow-list of at most
``EXACT_SUBSET_MAX`` rows is scored exactly against those rows; any other filtered row searches faiss with an
``IDSelector`` (IVF: the nearest lists that hold allowed rows; HNSW: efSearch widened by 1/share, exact scoring
where that would pass ``HNSW_MAX_EF``) and, when the search found fewer than ``k`` usable rows, is answered by
exact scoring instead. So a row is short of ``k`` only when fewer than ``k`` rows are allowed and not excluded.

    index = build_index(vectors, ann_threshold=50_000, kind="ivf")    # ExactIndex or FaissIndex
    ids, scores = index.search(queries, k=10, exclude=[history, ...])  # (B, k) each, best first, 0 / -inf padding
    ids, scores = index.search(queries, k=10, allow=[category_rows, None, ...])  # only those rows (None: any)
    index.add(new_vectors)                                           # appended: new items get the next indices
    recall_at_k(index, exact, queries, 10)                          # share of the exact top-k the ANN finds
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

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


#: A filtered row whose allowed rows number at most this is scored exactly against just those rows. At 1M items × 64
#: dims on one core exact scoring took 0.11 / 0.47 / 1.15 ms for 1,000 / 3,000 / 10,000 rows, IVF with a selector
#: 0.34-0.76 ms at recall ≥ 0.998 whatever the size (its cost is the catalogue's bitmap and the lists it scans).
EXACT_SUBSET_MAX = 4_000
#: A filtered HNSW search widens efSearch by 1/share (see ``FaissIndex._hnsw_ef``) up to this; a filter that would
#: need more is scored exactly: at 1M items a 1 % category needed efSearch 12,900 and 85 ms, exact scoring 1.2 ms.
HNSW_MAX_EF = 2_048
#: A filtered IVF search scans the nearest lists that hold allowed rows, ``nprobe`` of them and more until they hold
#: as many allowed rows as this share of an unfiltered probe's rows: a sparse filter still sees enough candidates.
#: At 0.1, a category of 6 % of a 2,869-item catalogue whose items (many with a second category) spread over 36 of
#: 71 lists got recall@10 0.875; at 0.2 it gets 1.0 (tests/engines/neural/test_engine.py).
PROBE_SHARE = 0.2
#: Exclusion lists up to this long (a history, a few named items) are met by over-fetching, as an unfiltered request
#: is; a longer one goes into a faiss selector instead of a fetch of that many extra rows.
OVERFETCH_MAX = 256

_NONE = np.zeros(0, dtype=np.int64)


def valid_rows(rows: np.ndarray, size: int) -> np.ndarray:
    """The sorted unique rows of ``rows`` that name an item (1..size-1): padding and unknown indices dropped."""
    r = np.asarray(rows, dtype=np.int64).reshape(-1)
    if r.size > 1 and bool(np.all(r[1:] > r[:-1])):
        # Already sorted and unique, as a category's items are: sorting 200,000 of them again took longer than the
        # filtered search itself.
        lo, hi = np.searchsorted(r, [1, size])
        return r[lo:hi]
    r = np.sort(r[(r > 0) & (r < size)])
    # Sorted, then adjacent duplicates dropped: np.unique hashes first and took 38 ms for 100,000 rows (a category
    # in an exclusion list), where the sort takes 1.3 ms.
    keep = np.ones(r.size, dtype=bool)
    np.not_equal(r[1:], r[:-1], out=keep[1:])
    return r[keep]


def without(rows: np.ndarray, dropped: np.ndarray) -> np.ndarray:
    """Sorted unique ``rows`` less the sorted unique ``dropped`` (a binary search per dropped row, no sort)."""
    if rows.size == 0 or dropped.size == 0:
        return rows
    pos = np.searchsorted(rows, dropped)
    inside = pos < rows.size
    pos = pos[inside]
    return np.delete(rows, pos[rows[pos] == dropped[inside]])


class VectorIndex(ABC):
    kind: IndexKind
    #: The full item vectors (size, d), row 0 the padding row: exact scoring of a filtered subset reads them.
    vectors: torch.Tensor

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

    def filtered_route(self, n_allowed: int | None, n_dropped: int) -> Literal["exact", "selector"]:
        """How a filtered row with ``n_allowed`` allowed rows (None: all) and ``n_dropped`` excluded ones is answered:
        exact scoring of its candidates, or an ANN search with a selector. This index: always exact."""
        return "exact"

    def _search_filtered(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None, dropped: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` of one query (d,) among ``allowed`` (None: every row) without ``dropped``; may come back short,
        ``search`` then falls back to exact scoring. By default exact."""
        return self._exact(query, k, allowed, dropped)

    def _exact(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None, dropped: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` of one query among ``allowed`` rows (None: every row) without ``dropped`` rows."""
        vectors = self.vectors
        q = torch.from_numpy(query)
        if allowed is not None:
            if allowed.size == 0:
                return _NONE, np.zeros(0, dtype=np.float32)
            rows = torch.from_numpy(allowed)
            # A small subset is gathered and scored alone (its own size, not the catalogue's); gathering a row costs
            # about ten times scoring it in a full matrix product, so a large subset is picked from all scores.
            scores = vectors[rows] @ q if allowed.size * 8 < vectors.shape[0] else (vectors @ q)[rows]
            values, order = torch.topk(scores, min(k, allowed.size))
            return allowed[order.numpy()], values.numpy()
        scores = vectors @ q
        scores[0] = -torch.inf
        scores[torch.from_numpy(dropped)] = -torch.inf
        values, ids = torch.topk(scores, min(k, scores.shape[0]))
        found = torch.isfinite(values)
        return ids[found].numpy(), values[found].numpy()

    def search(
        self,
        queries: np.ndarray,
        k: int,
        exclude: Sequence[np.ndarray] | None = None,
        allow: Sequence[np.ndarray | None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows per query, best first, without row 0 and the rows in ``exclude[i]``, and only rows of
        ``allow[i]`` where that is given (None, or a row past the end of ``allow``: every row is allowed).

        Rows that cannot be filled are index 0 with score -inf (the Engine contract's padding); a row is short only
        when fewer than ``k`` rows are allowed and not excluded, never because an ANN search missed them.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        bsz = queries.shape[0]
        size = self.size
        k = max(0, min(int(k), size - 1))
        out_ids = np.zeros((bsz, k), dtype=np.int64)
        out_scores = np.full((bsz, k), -np.inf, dtype=np.float32)
        if k == 0 or bsz == 0:
            return out_ids, out_scores
        n_excl = len(exclude) if exclude is not None else 0
        raw = [
            np.asarray(exclude[i], dtype=np.int64).reshape(-1) if exclude is not None and i < n_excl else _NONE
            for i in range(bsz)
        ]
        wanted = [allow[i] if allow is not None and i < len(allow) else None for i in range(bsz)]
        found = np.zeros(bsz, dtype=np.int64)

        def put(i: int, ids: np.ndarray, scores: np.ndarray) -> None:
            out_ids[i, : len(ids)] = ids
            out_scores[i, : len(ids)] = scores
            out_ids[i, len(ids) :] = 0
            out_scores[i, len(ids) :] = -np.inf
            found[i] = len(ids)

        # Unfiltered rows with short exclusion lists (the history): one batched search, over-fetched by the longest
        # list, exactly as before filters moved into the search (no sorting of the lists, no selector).
        plain = [i for i in range(bsz) if wanted[i] is None and raw[i].size <= OVERFETCH_MAX]
        if plain:
            fetch = min(size, k + 1 + max(raw[i].size for i in plain))
            ids, scores = self._search(queries[plain], fetch)
            for j, i in enumerate(plain):
                keep = (ids[j] > 0) & ~np.isin(ids[j], raw[i])
                put(i, ids[j][keep][:k], scores[j][keep][:k])
        is_plain = np.zeros(bsz, dtype=bool)
        is_plain[plain] = True
        for i in range(bsz):
            if is_plain[i] and found[i] == k:
                continue
            dropped = valid_rows(raw[i], size)
            a = wanted[i]
            allowed = None if a is None else without(valid_rows(a, size), dropped)
            if not is_plain[i]:
                put(i, *self._search_filtered(queries[i], k, allowed, dropped))
            # An ANN search sees only what its probed lists or visited nodes hold; when that leaves the row short
            # of rows that exist, exact scoring of the candidates answers instead.
            candidates = allowed.size if allowed is not None else size - 1 - dropped.size
            if found[i] < min(k, candidates):
                put(i, *self._exact(queries[i], k, allowed, dropped))
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
        # Any, not faiss.Index: faiss's SWIG stubs know neither the IVF/HNSW attributes behind it nor the signatures
        # its Python wrappers add (``IDSelectorBitmap(array)``, ``SearchParametersIVF(sel=…)``).
        index: Any
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
        # The full vectors stay at hand for exact scoring of filtered rows (a view of the caller's array, no copy).
        self.vectors = torch.from_numpy(vectors)
        if kind == "ivf":
            # Which list holds each row, and the centroids: a filtered search probes the nearest lists that hold
            # allowed rows, not the nearest lists (which may hold none of them).
            self._centroids = self.index.quantizer.reconstruct_n(0, self.index.nlist)
            self._row_list = row_lists(self.index)
            self._list_sizes = np.bincount(self._row_list, minlength=self.index.nlist)
        # faiss indexes are not safe to search while ``add`` changes them (serving threads search while an
        # admin call adds items): searches share the lock, an add takes it alone.
        self._lock = ReadWriteLock()

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    def add(self, vectors: np.ndarray) -> None:
        new = np.ascontiguousarray(vectors, dtype=np.float32)
        with self._lock.write():
            self.index.add(new)
            self.vectors = torch.cat([self.vectors, torch.from_numpy(new)])
            if self.kind == "ivf" and len(new):
                _, lists = self.index.quantizer.search(new, 1)  # the assignment IVF's own add made
                self._row_list = np.concatenate([self._row_list, lists[:, 0].astype(np.int32)])
                self._list_sizes = np.bincount(self._row_list, minlength=self.index.nlist)

    def _search(self, queries: np.ndarray, k: int, params: Any = None) -> tuple[np.ndarray, np.ndarray]:
        with self._lock.read():
            scores, ids = self.index.search(queries, k, params=params)
        scores = np.where(ids < 0, -np.inf, scores).astype(np.float32)
        return ids.astype(np.int64), scores

    def _search_filtered(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None, dropped: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.filtered_route(None if allowed is None else allowed.size, dropped.size) == "exact":
            return self._exact(query, k, allowed, dropped)
        faiss = _faiss()

        # The selector makes the search skip what the row may not return, so the k it finds are all usable; the
        # search-time knobs must be restated, a SearchParameters object replaces the index's own.
        q = query[None, :]
        with self._lock.read():
            sel = selector(self.size, allowed, dropped)
            if self.kind == "hnsw":
                ef = self._hnsw_ef(None if allowed is None else allowed.size, dropped.size)
                params = faiss.SearchParametersHNSW(sel=sel, efSearch=max(k, ef))
                scores, ids = self.index.search(q, k, params=params)
            else:
                lists, centroid_scores = self._probe(query, k, allowed, dropped)
                scores = np.empty((1, k), dtype=np.float32)
                ids = np.empty((1, k), dtype=np.int64)
                # search_preassigned scans the given lists; the Python wrapper refuses SearchParameters (and so a
                # selector), the SWIG method it wraps takes them.
                self.index.search_preassigned_c(
                    1,
                    faiss.swig_ptr(q),
                    k,
                    faiss.swig_ptr(lists[None, :]),
                    faiss.swig_ptr(centroid_scores[None, :]),
                    faiss.swig_ptr(scores),
                    faiss.swig_ptr(ids),
                    False,
                    faiss.SearchParametersIVF(sel=sel, nprobe=len(lists)),
                )
        keep = ids[0] > 0
        return ids[0][keep].astype(np.int64), scores[0][keep].astype(np.float32)

    def filtered_route(self, n_allowed: int | None, n_dropped: int) -> Literal["exact", "selector"]:
        if n_allowed is not None and n_allowed <= EXACT_SUBSET_MAX:
            return "exact"
        if self.kind == "hnsw" and self._hnsw_ef(n_allowed, n_dropped) > HNSW_MAX_EF:
            return "exact"
        return "selector"

    def _hnsw_ef(self, n_allowed: int | None, n_dropped: int) -> int:
        """efSearch of a filtered HNSW search. The graph walk visits nodes near the query whether they are allowed or
        not: to meet as many allowed rows as an unfiltered search meets rows it must visit 1/share as many."""
        size = self.size
        share = (n_allowed if n_allowed is not None else size - 1 - n_dropped) / max(1, size - 1)
        return min(size, int(np.ceil(self.index.hnsw.efSearch / max(share, 1e-9))))

    def _probe(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None, dropped: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The IVF lists a filtered search scans, nearest centroid first, with their centroid scores: the nearest
        ``nprobe`` lists that hold allowed rows, and more until they hold as many allowed rows as an unfiltered probe
        would at ``PROBE_SHARE`` of its rows (and at least ``k``)."""
        nlist = int(self.index.nlist)
        if allowed is not None:
            counts = np.bincount(self._row_list[allowed], minlength=nlist)
        else:
            counts = self._list_sizes - np.bincount(self._row_list[dropped], minlength=nlist)
        centroid_scores = self._centroids @ query
        order = np.argsort(-centroid_scores)
        order = order[counts[order] > 0]
        nprobe = int(self.index.nprobe)
        want = max(k, PROBE_SHARE * nprobe * self.size / nlist)
        enough = int(np.searchsorted(np.cumsum(counts[order]), want)) + 1
        lists = order[: max(nprobe, enough)].astype(np.int64)
        return lists, centroid_scores[lists].astype(np.float32)

    def memory_bytes(self) -> int:
        import faiss

        return int(faiss.serialize_index(self.index).size)


def row_lists(ivf: Any) -> np.ndarray:
    """The inverted list of each row of a faiss IVF index, (ntotal,) int32, read from the lists themselves."""
    faiss = _faiss()
    out = np.empty(int(ivf.ntotal), dtype=np.int32)
    invlists = ivf.invlists
    for lst in range(int(ivf.nlist)):
        ids = faiss.rev_swig_ptr(invlists.get_ids(lst), invlists.list_size(lst))
        out[np.asarray(ids, dtype=np.int64)] = lst
    return out


def _faiss() -> Any:
    """faiss, imported on first use (a deployment that serves exactly never loads it), typed Any (see FaissIndex)."""
    import faiss

    return faiss


def selector(size: int, allowed: np.ndarray | None, dropped: np.ndarray) -> Any:
    """A faiss selector of the rows a filtered search may return: ``allowed`` (None: all) less ``dropped`` and row 0.

    A bitmap (one bit a row, tested by one read) unless few rows are excluded: faiss builds a hash set of the rows
    of an ``IDSelectorBatch``, 1.5 ms for 10,000 of them where the bitmap of 1M rows takes 0.1 ms."""
    faiss = _faiss()

    if allowed is None and dropped.size * 1024 < size:
        return faiss.IDSelectorNot(faiss.IDSelectorBatch(np.append(dropped, 0)))
    if allowed is None:
        mask = np.ones(size, dtype=bool)
        mask[dropped] = False
    else:
        mask = np.zeros(size, dtype=bool)
        mask[allowed] = True  # ``allowed`` is already without ``dropped``
    mask[0] = False
    return faiss.IDSelectorBitmap(np.packbits(mask, bitorder="little"))


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
