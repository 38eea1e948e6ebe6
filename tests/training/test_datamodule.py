"""Training windows and their batches (by length or at random, under a token budget)."""

from __future__ import annotations

import numpy as np
import pytest

from recengine.data.dataset import TRAIN, Dataset
from recengine.training.datamodule import SequenceDataModule, SequenceExamples, TokenBudgetSampler, collate, windows


@pytest.mark.parametrize("n", [1, 2, 3, 7, 11, 12, 25])
def test_windows_make_every_item_after_the_first_a_target_once(n: int) -> None:
    seq = np.arange(100, 100 + n)
    got = windows(seq, max_len=5)
    targets = np.concatenate([y for _, y in got]) if got else np.zeros(0, dtype=np.int64)
    assert sorted(targets.tolist()) == seq[1:].tolist()
    for x, y in got:
        assert 1 <= len(x) == len(y) <= 5
        assert (y == x + 1).all()  # each target is the item right after its input
    if got:
        assert got[0][1][-1] == seq[-1]  # the first window ends at the newest item


def test_examples_cover_the_training_split(small_dataset: Dataset) -> None:
    seqs = small_dataset.sequences(max_split=TRAIN)
    ex = SequenceExamples(seqs, max_len=10)
    assert ex.n_targets == sum(max(0, len(s) - 1) for s in seqs)
    x, y = ex[0]
    assert x.shape == y.shape and len(x) <= 10


def test_collate_right_pads() -> None:
    seqs, tgts = collate([(np.array([1, 2, 3]), np.array([2, 3, 4])), (np.array([5]), np.array([6]))])
    assert seqs.tolist() == [[1, 2, 3], [5, 0, 0]]
    assert tgts.tolist() == [[2, 3, 4], [6, 0, 0]]


def test_sampler_visits_every_example_once_per_epoch_in_a_new_order() -> None:
    lengths = np.random.default_rng(0).integers(1, 50, size=1000)
    sampler = TokenBudgetSampler(lengths, batch_size=32, seed=3)
    first, second = list(sampler), list(sampler)
    for epoch in (first, second):
        assert sorted(i for b in epoch for i in b) == list(range(1000))
        assert len(epoch) == len(sampler)
    assert first != second
    # Bucketing: lengths within a batch are far closer than across the data set.
    spread = np.mean([lengths[b].max() - lengths[b].min() for b in first if len(b) > 1])
    assert spread < 0.5 * (lengths.max() - lengths.min())


def test_sampler_gives_ranks_disjoint_equal_shares() -> None:
    lengths = np.ones(330, dtype=np.int64)
    shards = [list(TokenBudgetSampler(lengths, 32, seed=1, rank=r, world_size=3)) for r in range(3)]
    assert len({len(s) for s in shards}) == 1
    seen = [i for s in shards for b in s for i in b]
    assert len(seen) == len(set(seen))


def test_datamodule_batches(small_dataset: Dataset) -> None:
    dm = SequenceDataModule(small_dataset, max_len=16, batch_size=8, seed=0)
    seqs, tgts = next(iter(dm.train_dataloader()))
    assert seqs.shape == tgts.shape and seqs.shape[0] <= 8 and seqs.shape[1] <= 16
    assert ((seqs > 0) == (tgts > 0)).all()


def test_token_budget_caps_padded_positions_per_batch() -> None:
    lengths = np.concatenate([np.full(200, 3), np.full(50, 200)])
    sampler = TokenBudgetSampler(lengths, batch_size=64, seed=0, batch_tokens=1000)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(250))
    assert all(len(b) * lengths[b].max() <= 1000 or len(b) == 1 for b in batches)
    assert all(len(b) <= 64 for b in batches)
    # Long sequences come 5 to a batch, short ones up to the sequence cap.
    assert max(len(b) for b in batches if lengths[b].max() == 200) == 5
    assert max(len(b) for b in batches if lengths[b].max() == 3) == 64
    assert len(sampler) == len(list(sampler))


def test_random_batches_mix_every_length_and_keep_the_budgets() -> None:
    lengths = np.concatenate([np.full(500, 2), np.full(500, 20)])
    sampler = TokenBudgetSampler(lengths, batch_size=40, seed=0, batch_tokens=400, by_length=False)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(1000))
    assert all(len(b) <= 40 and (len(b) * lengths[b].max() <= 400 or len(b) == 1) for b in batches)
    # Unlike length buckets, most batches hold both short and long windows.
    mixed = [b for b in batches if len(set(lengths[b].tolist())) == 2]
    assert len(mixed) > 0.8 * len(batches)
    assert list(sampler) != batches  # a new order every epoch
