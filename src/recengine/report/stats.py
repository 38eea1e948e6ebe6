"""A paired bootstrap of per-user metric differences: does model A beat model B, and by how much?

Both models are scored on the same users, so the question is about the mean of the per-user differences
``d_u = a_u - b_u``. Resampling users (with replacement) and taking the mean of each resample gives that mean's
sampling distribution without assuming normality; its 2.5 % and 97.5 % percentiles are the 95 % interval.
Pairing removes the between-user variance (hard users are hard for both models), which is most of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairedDifference:
    a: str
    b: str
    metric: str
    n_users: int
    mean_a: float
    mean_b: float
    mean_diff: float
    """mean(a - b): positive when A is better."""
    ci_low: float
    ci_high: float
    p_not_better: float
    """Share of bootstrap means ≤ 0: a one-sided bootstrap p-value for "A is better than B"."""
    level: float

    @property
    def verdict(self) -> str:
        if self.ci_low > 0:
            return f"{self.a} better"
        if self.ci_high < 0:
            return f"{self.b} better"
        return "no clear difference"


def bootstrap_means(diffs: np.ndarray, n_resamples: int = 2000, seed: int = 0) -> np.ndarray:
    """``n_resamples`` means of user resamples of ``diffs`` (chunked: at most ~10⁷ indices in memory at once)."""
    d = np.asarray(diffs, dtype=np.float64).reshape(-1)
    n = d.size
    if n == 0:
        return np.zeros(0)
    rng = np.random.default_rng(seed)
    out = np.empty(n_resamples)
    chunk = max(1, 10_000_000 // n)
    for start in range(0, n_resamples, chunk):
        stop = min(n_resamples, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = d[idx].mean(axis=1)
    return out


def paired_bootstrap(
    a: np.ndarray,
    b: np.ndarray,
    *,
    names: tuple[str, str] = ("A", "B"),
    metric: str = "ndcg@10",
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> PairedDifference:
    """The mean per-user difference ``a - b`` with its percentile bootstrap interval."""
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in size: {a.size} and {b.size} users")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    diffs = a - b
    means = bootstrap_means(diffs, n_resamples, seed)
    alpha = (1 - level) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha]) if means.size else (0.0, 0.0)
    return PairedDifference(
        a=names[0],
        b=names[1],
        metric=metric,
        n_users=int(a.size),
        mean_a=float(a.mean()) if a.size else 0.0,
        mean_b=float(b.mean()) if b.size else 0.0,
        mean_diff=float(diffs.mean()) if diffs.size else 0.0,
        ci_low=float(low),
        ci_high=float(high),
        p_not_better=float((means <= 0).mean()) if means.size else 1.0,
        level=level,
    )
