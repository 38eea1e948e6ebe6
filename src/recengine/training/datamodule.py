"""Training sequences from the processed data set, batched for a next-item model.

One user's training sequence is one example with a target at every position (input ``s[:-1]``, target ``s[1:]``),
not one example per prefix: the model sees every position in one pass. A sequence longer than ``max_len + 1`` is cut
from the newest end into consecutive windows, so every training interaction is a target exactly once.

Batches close at a number of sequences or of padded positions. They either group sequences of similar length (sorted
with a random jitter, then shuffled batch by batch: on data where most users have a handful of items, padding every
batch to ``max_len`` would spend most of the compute on padding) or mix every length (an unbiased sample per step).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from recengine.data.dataset import TRAIN
from recengine.data.dataset import Dataset as RecDataset
from recengine.errors import DataError


def windows(sequence: np.ndarray, max_len: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(inputs, targets) windows of at most ``max_len`` positions covering every next-item target once."""
    out = []
    end = len(sequence) - 1  # index of the newest target
    while end >= 1:
        start = max(0, end - max_len)  # first input index of this window
        out.append((sequence[start:end], sequence[start + 1 : end + 1]))
        end = start
    return out


class SequenceExamples(Dataset[Any]):
    """Every training window of every user, as a flat item array with offsets."""

    def __init__(self, sequences: list[np.ndarray], max_len: int) -> None:
        inputs, targets, lengths = [], [], []
        for seq in sequences:
            for x, y in windows(np.asarray(seq, dtype=np.int64), max_len):
                inputs.append(x)
                targets.append(y)
                lengths.append(len(x))
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)
        self.inputs = np.concatenate(inputs) if inputs else np.zeros(0, dtype=np.int64)
        self.targets = np.concatenate(targets) if targets else np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.offsets[i], self.offsets[i + 1]
        return self.inputs[a:b], self.targets[a:b]

    @property
    def n_targets(self) -> int:
        return int(self.lengths.sum())


def collate(batch: list[tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest sequence of the batch: (B, T) inputs and targets, 0 = padding."""
    t = max(len(x) for x, _ in batch)
    seqs = np.zeros((len(batch), t), dtype=np.int64)
    tgts = np.zeros((len(batch), t), dtype=np.int64)
    for i, (x, y) in enumerate(batch):
        seqs[i, : len(x)] = x
        tgts[i, : len(y)] = y
    return torch.from_numpy(seqs), torch.from_numpy(tgts)


class TokenBudgetSampler(Sampler[list[int]]):
    """Batches of training windows in a new random order each epoch; ranks take disjoint batches.

    A batch closes at ``batch_size`` sequences or ``batch_tokens`` padded positions, whichever comes first (as
    translation models batch by tokens): long-history data then gets as many optimiser steps per epoch as
    short-history data, instead of a handful of huge batches.

    ``by_length=True`` groups windows of similar length (sorted with a random jitter, then batches shuffled), so
    little compute goes to padding; ``False`` draws each batch from the whole shuffled set, so every batch mixes
    users of every history length: an unbiased sample of the training targets, at the cost of padding short
    windows to the batch's longest one.
    """

    def __init__(
        self,
        lengths: np.ndarray,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        batch_tokens: int | None = None,
        by_length: bool = True,
    ) -> None:
        self.lengths = lengths
        self.batch_size = batch_size
        self.batch_tokens = batch_tokens
        self.by_length = by_length
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self._cache: tuple[int, list[np.ndarray]] | None = None

    def _pack(self, order: np.ndarray) -> list[np.ndarray]:
        if self.batch_tokens is None:
            return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        batches, start, longest = [], 0, 0
        for j, idx in enumerate(order):
            longest_with = max(longest, int(self.lengths[idx]))
            n = j - start + 1
            if n > 1 and (n > self.batch_size or n * longest_with > self.batch_tokens):
                batches.append(order[start:j])
                start, longest_with = j, int(self.lengths[idx])
            longest = longest_with
        if start < len(order):
            batches.append(order[start:])
        return batches

    def _batches(self) -> list[np.ndarray]:
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1]
        rng = np.random.default_rng((self.seed, self.epoch))
        if self.by_length:
            # Jitter of ±25 % keeps batch composition random while lengths within a batch stay close.
            keys = self.lengths * rng.uniform(0.75, 1.25, size=self.lengths.shape[0])
            batches = self._pack(np.argsort(keys, kind="stable"))
        else:
            batches = self._pack(rng.permutation(self.lengths.shape[0]))
        batches = [batches[i] for i in rng.permutation(len(batches))]
        # Every rank must run the same number of steps under DDP.
        per_rank = len(batches) // self.world_size
        batches = batches[self.rank :: self.world_size][:per_rank]
        self._cache = (self.epoch, batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._batches()
        self.epoch += 1
        return iter([b.tolist() for b in batches])

    def __len__(self) -> int:
        return len(self._batches())


class SequenceDataModule(L.LightningDataModule):
    """Training windows from the data set's train split; validation is done by a callback on the full ranking."""

    def __init__(
        self,
        dataset: RecDataset,
        max_len: int,
        batch_size: int,
        seed: int = 0,
        batch_tokens: int | None = None,
        by_length: bool = True,
    ) -> None:
        super().__init__()
        self.dataset = dataset
        self.max_len = max_len
        self.batch_size = batch_size
        self.batch_tokens = batch_tokens
        self.by_length = by_length
        self.seed = seed
        self.examples = SequenceExamples(dataset.sequences(max_split=TRAIN), max_len)
        self._sampler: TokenBudgetSampler | None = None

    def train_dataloader(self) -> DataLoader[Any]:
        rank, world = 0, 1
        if self.trainer is not None:
            rank, world = self.trainer.global_rank, self.trainer.world_size
        if self._sampler is None or (self._sampler.rank, self._sampler.world_size) != (rank, world):
            self._sampler = TokenBudgetSampler(
                self.examples.lengths, self.batch_size, self.seed, rank, world, self.batch_tokens, self.by_length
            )
            if len(self._sampler) == 0:
                raise DataError(
                    f"{len(self.examples)} training sequences make fewer batches than the {world} ranks sharing them: "
                    "lower the batch size or train on fewer devices"
                )
        return DataLoader(self.examples, batch_sampler=self._sampler, collate_fn=collate, num_workers=0)
