"""Histories as the batched input of a sequence model (the transformer, the neural engine's user tower)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def pad_histories(histories: Sequence[np.ndarray], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The newest ``max_len`` items of each history, right-padded with 0: (B, T) indices and (B,) lengths.

    T is the longest kept history, at least 1 so the batch stays rectangular; an empty history is one padding slot
    with length 0, and the models read its position 0 (callers decide whether an empty history is allowed).
    """
    kept = [np.asarray(h, dtype=np.int64)[-max_len:] for h in histories]
    lengths = np.asarray([len(h) for h in kept], dtype=np.int64)
    seqs = np.zeros((len(kept), max(1, int(lengths.max(initial=0)))), dtype=np.int64)
    for i, h in enumerate(kept):
        seqs[i, : len(h)] = h
    return torch.from_numpy(seqs), torch.from_numpy(lengths)
