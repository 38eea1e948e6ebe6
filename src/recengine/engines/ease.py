"""EASE (Steck, 2019): a closed-form item–item linear model, B = I − P / diag(P) with P = (XᵀX + λI)⁻¹.

Strong on small catalogues and a good yardstick; the item–item matrix is dense, so the catalogue size is capped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch
import torch.nn.functional as F

from recengine.data.dataset import TRAIN, VALID, Dataset
from recengine.engines.artifact import read_artifact, require
from recengine.engines.base import Engine, history_bags, known_items
from recengine.errors import CatalogueTooLarge, DataError
from recengine.evaluation import evaluate
from recengine.settings import EaseSettings

#: Rows per block when the inverse's lower triangle is mirrored into its upper one (bounds the temporary copy).
_MIRROR_BLOCK = 2048


def ease_weights(gram: np.ndarray, lam: float) -> torch.Tensor:
    """Item–item weights from the Gram matrix XᵀX ((N, N) float32, left untouched); zero diagonal, float32.

    One working copy of the matrix is all it takes: LAPACK factors it (Cholesky) and inverts it from the factor in
    place, then the columns are scaled in place. Float32 is exact for the Gram's counts (< 2²⁴) and, with λ added to
    the diagonal, the matrix is well conditioned enough for single precision (the float64 path it replaced gave the
    same validation choice and test figures; see benchmarks/results/quality.md)."""
    from scipy.linalg import lapack

    a = np.array(gram, dtype=np.float32, order="C", copy=True)
    a.flat[:: a.shape[0] + 1] += np.float32(lam)
    # A C-ordered symmetric matrix is its own transpose: its .T is the Fortran-ordered view LAPACK works on in place.
    _, info = lapack.spotrf(a.T, lower=True, overwrite_a=True, clean=False)
    if info == 0:
        _, info = lapack.spotri(a.T, lower=True, overwrite_c=True)
    if info != 0:
        raise DataError(f"EASE: the regularised Gram matrix is not positive definite (LAPACK info {info}); raise λ")
    # spotri filled the Fortran view's lower triangle, i.e. this array's upper one: mirror it into the lower.
    n = a.shape[0]
    for start in range(0, n, _MIRROR_BLOCK):
        stop = min(start + _MIRROR_BLOCK, n)
        a[stop:, start:stop] = a[start:stop, stop:].T
        block = a[start:stop, start:stop]
        block[...] = np.triu(block) + np.triu(block, 1).T
    diag = a.diagonal().copy()
    a /= -diag[None, :]
    a.flat[:: n + 1] = 0.0
    return torch.from_numpy(a)


class EASE(Engine):
    name = "ease"

    def __init__(self, weights: torch.Tensor, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.weights = weights  # (n_items + 1, n_items + 1); row/column 0 is padding and stays zero

    @classmethod
    def fit(
        cls,
        dataset: Dataset,
        config: EaseSettings | None = None,
        progress: Callable[[str], None] | None = None,
        **kwargs: Any,
    ) -> Self:
        config = config or EaseSettings()
        n = dataset.n_items
        if n > config.max_items:
            gib = 3 * (n + 1) ** 2 * 4 / 2**30  # the Gram matrix, one working copy, the best λ's weights
            raise CatalogueTooLarge(
                f"EASE needs dense item×item matrices: {n} items would take about {gib:.1f} GiB; "
                f"the limit is engines.ease.max_items = {config.max_items}. Use the transformer or neural engine."
            )
        x = dataset.train_matrix(max_split=TRAIN)
        if x.nnz == 0:
            raise DataError("EASE: the training split is empty")
        x = x.astype(np.float32)
        gram = (x.T @ x).toarray()
        del x
        best: tuple[float, float, torch.Tensor] | None = None
        tried: dict[str, float] = {}
        has_valid = bool((dataset.split == VALID).any())
        for lam in config.lambdas if has_valid else config.lambdas[:1]:
            b = ease_weights(gram, lam)
            if not has_valid:
                best = (lam, float("nan"), b)
                break
            engine = cls(weights=b, items=dataset.items)
            ndcg = float(evaluate(engine.score, dataset, split="valid", ks=(10,))["ndcg@10"])
            tried[str(lam)] = ndcg
            if progress is not None:
                progress(f"λ={lam:g}: valid ndcg@10={ndcg:.4f}")
            if best is None or ndcg > best[1]:
                best = (lam, ndcg, b)
            else:
                del b
        assert best is not None
        lam, ndcg, weights = best
        return cls(
            weights=weights,
            items=dataset.items,
            config={
                "hyper_parameters": {**config.model_dump(), "lambda": lam},
                "dataset_hash": dataset.content_hash,
            },
            metrics={"valid_ndcg@10_by_lambda": tried, "lambda": lam},
        )

    def score(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        # x·B for a binary x is the sum of B's history rows: embedding_bag reads only those rows.
        flat, offsets = history_bags([known_items(h, self.n_items) for h in histories])
        scores = F.embedding_bag(flat, self.weights, offsets, mode="sum")
        scores[:, 0] = -torch.inf  # padding, as in every engine's scores (the evaluator masks it anyway)
        return scores

    def save(self, path: Path) -> Path:
        return self._write(path, {"weights": self.weights})

    @classmethod
    def load(cls, path: Path) -> Self:
        art = read_artifact(path, expect_engine=cls.name)
        n = art.items.n_items + 1
        return cls(weights=require(art, "weights", (n, n)), items=art.items, config=art.config, metrics=art.metrics)
