"""The validation figures every engine is selected and reported on: full ranking of the valid split.

The same function scores a Lightning module after each epoch (``trainer.RankingValidation``) and a closed-form
engine once (``run.fit``), so ``valid_ndcg@10`` means the same thing in every engine's metrics. It needs no
Lightning.
"""

from __future__ import annotations

import time

from recengine.data.dataset import Dataset
from recengine.errors import TrainingDiverged
from recengine.evaluation import Scorer, evaluate

MONITOR = "valid/ndcg@10"
"""The figure that stops training and picks the epoch (and, for EASE, the regularisation)."""


def validation_metrics(
    scorer: Scorer, dataset: Dataset, max_users: int | None = None, batch_size: int = 1024
) -> dict[str, float]:
    """``valid/<metric>`` at cut-offs 10 and 20 over ``max_users`` evenly spread users (None = all), plus
    ``valid/seconds``; empty when the data set has no validation users. Raises :class:`TrainingDiverged` when a
    user's target score is NaN or infinite."""
    started = time.perf_counter()
    result = evaluate(scorer, dataset, split="valid", ks=(10, 20), batch_size=batch_size, max_users=max_users)
    if not result["n_users"]:
        return {}
    if result["non_finite_users"]:
        # Scored as misses by the evaluator, but a model that produces them has diverged: stop here, so that it is
        # never picked as the best epoch, saved or made CURRENT.
        raise TrainingDiverged(
            f"validation scores are NaN or infinite for {result['non_finite_users']} of {result['n_users']} users: "
            "training diverged (try a lower learning rate, or precision 32-true); nothing was saved"
        )
    metrics = {f"valid/{k}": float(v) for k, v in result.items() if "@" in k}
    metrics["valid/seconds"] = time.perf_counter() - started
    return metrics
