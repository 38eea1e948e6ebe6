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
