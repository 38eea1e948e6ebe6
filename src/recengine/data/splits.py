"""Evaluation splits, as a split code per interaction (TRAIN / VALID / TEST).

Both expect rows sorted by user, then time (ties in input order), which is how the data set stores them.
"""

from __future__ import annotations

import numpy as np

from recengine.data.dataset import TEST, TRAIN, VALID
from recengine.errors import DataError


def leave_one_out(user: np.ndarray, min_length: int = 3) -> np.ndarray:
    """Each user's last interaction → test, second to last → validation, the rest → train.

    Users with fewer than ``min_length`` interactions stay in train only.
    """
    n = user.shape[0]
    split = np.full(n, TRAIN, dtype=np.int8)
    if n == 0:
        return split
    if np.any(np.diff(user) < 0):
        raise DataError("leave_one_out needs rows sorted by user")
    last = np.r_[np.flatnonzero(np.diff(user)), n - 1]  # last row of each user
    first = np.r_[0, last[:-1] + 1]
    long_enough = (last - first + 1) >= min_length
    split[last[long_enough]] = TEST
    split[last[long_enough] - 1] = VALID
    return split


def temporal_split(timestamp: np.ndarray, valid_fraction: float, test_fraction: float) -> np.ndarray:
    """One global cut-off per split: the newest ``test_fraction`` of interactions → test, the
    ``valid_fraction`` before them → validation. Every training row is strictly older than every validation row,
    and every validation row strictly older than every test row (a timestamp is never cut in two)."""
    if not 0 < valid_fraction < 1 or not 0 < test_fraction < 1 or valid_fraction + test_fraction >= 1:
        raise DataError("temporal split fractions must be in (0, 1) and sum to less than 1")
    split = np.full(timestamp.shape[0], TRAIN, dtype=np.int8)
    if timestamp.size == 0:
        return split
    ordered = np.sort(timestamp, kind="stable")
    n = ordered.size
    cut_test = ordered[min(n - 1, int(np.floor(n * (1 - test_fraction))))]
    cut_valid = ordered[min(n - 1, int(np.floor(n * (1 - test_fraction - valid_fraction))))]
    split[timestamp >= cut_valid] = VALID
    split[timestamp >= cut_test] = TEST
    return split
