"""The one padding helper of the sequence models."""

from __future__ import annotations

import numpy as np
import torch

from recengine.engines.sequences import pad_histories


def test_pad_histories_keeps_the_newest_items() -> None:
    seqs, lengths = pad_histories([np.arange(1, 21)], max_len=5)
    assert seqs.tolist() == [[16, 17, 18, 19, 20]] and lengths.tolist() == [5]


def test_pad_histories_right_pads_to_the_longest() -> None:
    seqs, lengths = pad_histories([np.array([3, 4, 5]), np.array([9])], max_len=12)
    assert seqs.tolist() == [[3, 4, 5], [9, 0, 0]] and lengths.tolist() == [3, 1]
    assert seqs.dtype == lengths.dtype == torch.int64


def test_an_empty_history_is_one_padding_slot_of_length_zero() -> None:
    seqs, lengths = pad_histories([np.array([], dtype=np.int64)], max_len=5)
    assert seqs.tolist() == [[0]] and lengths.tolist() == [0]
    seqs, lengths = pad_histories([], max_len=5)
    assert tuple(seqs.shape) == (0, 1) and lengths.tolist() == []
