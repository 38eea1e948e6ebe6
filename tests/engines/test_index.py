"""Exact and faiss indexes: same contract, ANN close to exact, exclusions and padding honoured."""

from __future__ import annotations

import numpy as np
import pytest

from recengine.engines.index import ExactIndex, FaissIndex, build_index, recall_at_k
from recengine.errors import ConfigError


def unit_vectors(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n + 1, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x[0] = 0.0  # the padding row
    return x


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return unit_vectors(3000, 32, seed=0)


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    return unit_vectors(200, 32, seed=1)[1:]


def test_exact_returns_the_true_top_k_without_padding(vectors: np.ndarray, queries: np.ndarray) -> None:
    ids, scores = ExactIndex(vectors).search(queries, 5)
    brute = queries @ vectors.T
    brute[:, 0] = -np.inf
    want = np.argsort(-brute, axis=1)[:, :5]
    assert (ids == want).all()
    assert np.allclose(scores, np.take_along_axis(brute, want, axis=1), atol=1e-5)
    assert (ids > 0).all()


def clustered_vectors(n: int, d: int, seed: int) -> np.ndarray:
    # Trained embeddings form clusters; uniform random vectors are the worst case for IVF's coarse partition.
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((30, d))
    x = (centres[rng.integers(0, 30, size=n + 1)] + 0.5 * rng.standard_normal((n + 1, d))).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x[0] = 0.0
    return x


def test_hnsw_recall_vs_exact_is_at_least_095_on_uniform_random_vectors(
    vectors: np.ndarray, queries: np.ndarray
) -> None:
    ann = FaissIndex(vectors, kind="hnsw")
    assert recall_at_k(ann, ExactIndex(vectors), queries, 10) >= 0.95


def test_ivf_recall_vs_exact_is_at_least_095_on_clustered_vectors() -> None:
    data = clustered_vectors(3000, 32, seed=3)
    queries = clustered_vectors(200, 32, seed=3)[1:] + 0.05
    ann = FaissIndex(data, kind="ivf")
    assert recall_at_k(ann, ExactIndex(data), queries, 10) >= 0.95


@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivf"])
def test_exclusions_are_never_returned_and_k_is_filled(vectors: np.ndarray, queries: np.ndarray, kind: str) -> None:
    index = ExactIndex(vectors) if kind == "exact" else FaissIndex(vectors, kind=kind)  # type: ignore[arg-type]
    top, _ = index.search(queries[:4], 10)
    exclude = [row[:5] for row in top]  # drop each query's five best
    ids, scores = index.search(queries[:4], 10, exclude=exclude)
    for row, drop in zip(ids, exclude, strict=True):
        assert not np.isin(row, drop).any()
        assert (row > 0).all() and len(set(row.tolist())) == 10
    assert np.isfinite(scores).all()


@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_added_rows_get_the_next_indices_and_are_found(vectors: np.ndarray, kind: str) -> None:
    index = ExactIndex(vectors.copy()) if kind == "exact" else FaissIndex(vectors, kind="hnsw")
    new = unit_vectors(2, 32, seed=7)[1:]
    index.add(new)
    assert index.size == vectors.shape[0] + 2
    ids, scores = index.search(new, 1)
    assert ids[:, 0].tolist() == [vectors.shape[0], vectors.shape[0] + 1]
    assert np.allclose(scores[:, 0], 1.0, atol=1e-4)


def test_rows_that_cannot_be_filled_are_padding() -> None:
    small = unit_vectors(3, 8, seed=2)
    ids, scores = ExactIndex(small).search(small[1:2], 3, exclude=[np.array([1, 2])])
    assert ids.tolist() == [[3, 0, 0]]
    assert np.isfinite(scores[0, 0]) and np.isneginf(scores[0, 1:]).all()


def test_build_index_switches_to_ann_above_the_threshold(vectors: np.ndarray) -> None:
    assert build_index(vectors, ann_threshold=len(vectors)).kind == "exact"
    assert build_index(vectors, ann_threshold=100, kind="ivf").kind == "ivf"


def test_unknown_kind_is_a_config_error(vectors: np.ndarray) -> None:
    with pytest.raises(ConfigError, match="ann_kind"):
        FaissIndex(vectors, kind="lsh")  # type: ignore[arg-type]


def test_exact_merges_top_k_across_item_chunks_and_query_blocks() -> None:
    # 40,000 rows span three 16,384-row chunks and 1,500 queries two query blocks: the merge must be exact.
    vecs = unit_vectors(40_000, 8, seed=3)
    qs = unit_vectors(1_500, 8, seed=4)[1:]
    ids, scores = ExactIndex(vecs).search(qs, 7)
    brute = qs @ vecs.T
    brute[:, 0] = -np.inf
    want = np.argsort(-brute, axis=1, kind="stable")[:, :7]
    assert np.allclose(scores, np.take_along_axis(brute, want, axis=1), atol=1e-5)
    assert (ids == want).mean() > 0.999  # float ties may swap equal scores, never lose one
    assert (ids > 0).all()


def test_faiss_add_while_searching_from_other_threads() -> None:
    import threading

    vecs = clustered_vectors(4000, 16, seed=5)
    index = FaissIndex(vecs, kind="ivf")
    errors: list[BaseException] = []
    stop = threading.Event()

    def searcher() -> None:
        try:
            while not stop.is_set():
                ids, _ = index.search(vecs[1:65], 5)
                assert (ids > 0).all()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=searcher) for _ in range(3)]
    for t in threads:
        t.start()
    new = clustered_vectors(200, 16, seed=6)[1:]
    for chunk in np.array_split(new, 20):
        index.add(chunk)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert index.size == 4001 + 200
    found, _ = index.search(new[:20], 1)
    assert (found[:, 0] >= 4001).mean() >= 0.9  # the added rows are there and searchable


# ---- filters inside the search -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def grouped() -> tuple[np.ndarray, np.ndarray]:
    """3,000 rows in 30 tight clusters and each row's cluster: a "category" made of a few clusters sits in a handful of
    IVF's 75 lists, none of them near a query from another cluster."""
    rng = np.random.default_rng(11)
    centres = rng.standard_normal((30, 32))
    labels = rng.integers(0, 30, size=3001)
    x = (centres[labels] + 0.3 * rng.standard_normal((3001, 32))).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x[0] = 0.0
    labels[0] = -1
    return x, labels


def filtered_truth(
    vectors: np.ndarray, queries: np.ndarray, k: int, allowed: np.ndarray, dropped: list[np.ndarray]
) -> np.ndarray:
    """Brute force: the top-``k`` allowed, not dropped rows per query (ids, best first; fewer when fewer exist)."""
    out = []
    for q, drop in zip(queries, dropped, strict=True):
        rows = np.setdiff1d(allowed, drop)
        order = np.argsort(-(vectors[rows] @ q), kind="stable")[:k]
        out.append(rows[order])
    return np.asarray(out)


def far_queries(vectors: np.ndarray, labels: np.ndarray, avoid: list[int], n: int) -> np.ndarray:
    """Queries at rows of clusters other than ``avoid``, slightly perturbed: far from the filtered category."""
    rows = np.flatnonzero(~np.isin(labels, [*avoid, -1]))[:n]
    q = vectors[rows] + 0.05 * np.random.default_rng(5).standard_normal((len(rows), vectors.shape[1]))
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def any_index(vectors: np.ndarray, kind: str) -> ExactIndex | FaissIndex:
    return ExactIndex(vectors) if kind == "exact" else FaissIndex(vectors, kind=kind)  # type: ignore[arg-type]


@pytest.mark.parametrize("route", ["exact subset", "selector"])
@pytest.mark.parametrize("kind", ["exact", "ivf", "hnsw"])
def test_a_filtered_search_fills_k_from_the_allowed_rows_best_first(
    grouped: tuple[np.ndarray, np.ndarray], kind: str, route: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import recengine.engines.index as index_module

    if route == "selector":  # a catalogue this small would otherwise always score its allowed subset exactly
        monkeypatch.setattr(index_module, "EXACT_SUBSET_MAX", 0)
    vectors, labels = grouped
    index = any_index(vectors, kind)
    if kind == "ivf":
        assert index.index.nprobe < index.index.nlist  # type: ignore[union-attr]
    allowed = np.flatnonzero(np.isin(labels, [0, 1, 2]))  # 10 %: HNSW too takes its selector (efSearch ~1,300)
    want_route = "selector" if kind != "exact" and route == "selector" else "exact"
    assert index.filtered_route(len(allowed), 23) == want_route
    queries = far_queries(vectors, labels, [0, 1, 2], 40)
    best, _ = index.search(queries, 3, allow=[allowed] * len(queries))
    dropped = [np.concatenate([b, np.flatnonzero(labels == 7)[:20]]) for b in best]  # its 3 best, and others
    k = 10
    ids, scores = index.search(queries, k, exclude=dropped, allow=[allowed] * len(queries))
    want = filtered_truth(vectors, queries, k, allowed, dropped)
    assert ids.shape == scores.shape == (len(queries), k)
    for q, row, row_scores, drop in zip(queries, ids, scores, dropped, strict=True):
        assert np.isin(row, allowed).all(), "only allowed rows, and k of them"
        assert not np.isin(row, drop).any()
        assert len(set(row.tolist())) == k
        assert np.all(np.diff(row_scores) <= 0), "best first"
        np.testing.assert_allclose(row_scores, vectors[row] @ q, rtol=1e-5, atol=1e-5)
    recall = np.mean([len(np.intersect1d(g, w)) / k for g, w in zip(ids, want, strict=True)])
    assert recall >= (1.0 if kind == "exact" or route == "exact subset" else 0.9), recall


@pytest.mark.parametrize("kind", ["exact", "ivf", "hnsw"])
def test_excluding_nearly_the_whole_catalogue_still_fills_k(grouped: tuple[np.ndarray, np.ndarray], kind: str) -> None:
    # The filter as an exclusion list (how include_categories reached the index before): IVF probes 16 lists near the
    # query, which hold none of the rows left, so an over-fetch of the whole catalogue came back empty.
    vectors, labels = grouped
    index = any_index(vectors, kind)
    allowed = np.flatnonzero(np.isin(labels, [0, 1]))
    rest = np.setdiff1d(np.arange(1, len(vectors)), allowed)
    queries = far_queries(vectors, labels, [0, 1], 40)
    ids, scores = index.search(queries, 10, exclude=[rest] * len(queries))
    assert (ids > 0).all() and np.isin(ids, allowed).all() and np.isfinite(scores).all()
    want = filtered_truth(vectors, queries, 10, allowed, [rest] * len(queries))
    recall = np.mean([len(np.intersect1d(g, w)) / 10 for g, w in zip(ids, want, strict=True)])
    assert recall >= 0.9, recall


@pytest.mark.parametrize("kind", ["exact", "ivf", "hnsw"])
def test_an_allow_list_short_of_k_is_padded_and_none_allows_everything(
    grouped: tuple[np.ndarray, np.ndarray], kind: str
) -> None:
    vectors, labels = grouped
    index = any_index(vectors, kind)
    queries = far_queries(vectors, labels, [], 3)
    three = np.array([5, 17, 900])
    noisy = np.array([0, -4, 900, 5, 17, 5, len(vectors), len(vectors) + 10])  # padding, unknown and repeated rows
    none = np.zeros(0, dtype=np.int64)
    ids, scores = index.search(queries, 5, exclude=[np.array([17]), none, none], allow=[noisy, None, none])
    assert set(ids[0, :2].tolist()) == {5, 900} and ids[0, 2:].tolist() == [0, 0, 0]
    assert np.isfinite(scores[0, :2]).all() and np.isneginf(scores[0, 2:]).all()
    unfiltered, _ = index.search(queries[1:2], 5)
    np.testing.assert_array_equal(ids[1], unfiltered[0])  # a None entry is no filter
    assert ids[2].tolist() == [0] * 5 and np.isneginf(scores[2]).all()  # an empty allow-list allows nothing
    ids, _ = index.search(queries[:1], 5, allow=[three])
    assert sorted(ids[0, :3].tolist()) == sorted(three.tolist())


def test_unfiltered_rows_and_short_histories_use_no_selector(
    grouped: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    import recengine.engines.index as index_module

    vectors, labels = grouped
    index = FaissIndex(vectors, kind="ivf")
    queries = far_queries(vectors, labels, [], 8)
    before, _ = index.search(queries, 10, exclude=[np.arange(1, 50)] * 8)

    def refuse(*args: object) -> None:
        raise AssertionError("an unfiltered request must not build a selector")

    monkeypatch.setattr(index_module, "selector", refuse)
    calls: list[int] = []
    search = index._search

    def counted(q: np.ndarray, k: int, params: object = None) -> tuple[np.ndarray, np.ndarray]:
        calls.append(len(q))
        return search(q, k, params)

    monkeypatch.setattr(index, "_search", counted)
    ids, _ = index.search(queries, 10, exclude=[np.arange(1, 50)] * 8)
    assert calls == [8], "one batched search for the whole batch"
    np.testing.assert_array_equal(ids, before)
    with pytest.raises(AssertionError, match="selector"):
        index.search(queries[:1], 10, exclude=[np.arange(1, index_module.OVERFETCH_MAX + 2)])


def test_the_route_of_a_filtered_row_follows_its_cost(
    grouped: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    import recengine.engines.index as index_module

    vectors, _ = grouped
    monkeypatch.setattr(index_module, "EXACT_SUBSET_MAX", 100)
    ivf, hnsw = FaissIndex(vectors, kind="ivf"), FaissIndex(vectors, kind="hnsw")
    assert ExactIndex(vectors).filtered_route(2_000, 0) == "exact"
    for index in (ivf, hnsw):
        assert index.filtered_route(100, 0) == "exact", "a small allowed set is scored exactly"
        assert index.filtered_route(1_500, 0) == "selector"
        assert index.filtered_route(None, 1_000) == "selector", "an exclusion list goes into the selector"
    # HNSW meets allowed rows in proportion to their share: 150 of 3,000 would need efSearch 2,560 > HNSW_MAX_EF.
    assert ivf.filtered_route(150, 0) == "selector" and hnsw.filtered_route(150, 0) == "exact"
