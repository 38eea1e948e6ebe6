"""The training task around :class:`TwoTower`: softmax over the catalogue or a log-Q corrected sampled softmax.

Each batch holds whole training windows (``training.datamodule.SequenceDataModule``): the user vector at every position
is trained to pick the next item. Catalogues up to ``engines.neural.full_softmax_items`` (20,000) score every item
that has training interactions at each step: exact, and affordable (one positions × items product, as the
transformer's loss). Larger catalogues use the batch's distinct target items plus uniform negatives; in-batch
candidates are drawn by popularity, which would teach the model to push popular items down, so log q (the item's
chance of being a candidate in this batch) is subtracted from its logit (Yi et al., RecSys 2019)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from recengine.engines.neural.model import ItemInputs, TwoTower, TwoTowerConfig
from recengine.engines.sequences import pad_histories
from recengine.engines.softmax import full_softmax_ce
from recengine.settings import NeuralSettings, TrainingSettings
from recengine.training.trainer import weight_decay_groups


def sampled_softmax_loss(
    users: torch.Tensor,
    candidates: torch.Tensor,
    labels: torch.Tensor,
    temperature: torch.Tensor | float,
    log_q: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy of users (n, d) over candidate items (C, d); ``labels`` (n,) index the positive candidate.

    ``log_q`` (C,) is each candidate's log probability of being sampled; subtracting it makes the sampled softmax
    an unbiased stand-in for the full one.
    """
    # Scaling the users (n, d) rather than the logits (n, C): the learned temperature's gradient then flows through
    # an (n, d) product instead of three (n, C) temporaries (division, negation and product in its backward).
    logits = (users / temperature) @ candidates.T  # (n, C)
    if log_q is not None:
        logits = logits - log_q
    return F.cross_entropy(logits, labels)


def inclusion_log_q(probs: torch.Tensor, n_draws: int, n_uniform: int, n_items: int) -> torch.Tensor:
    """log P(item is among the candidates) when ``n_draws`` targets follow ``probs`` and ``n_uniform`` are uniform.

    Candidates are de-duplicated, so the right q is the chance of appearing at least once, 1 − exp(−expected count),
    not the expected count itself (which exceeds 1 for head items in a large batch).
    """
    rate = n_draws * probs + n_uniform / max(1, n_items)
    return torch.log(-torch.expm1(-rate.clamp(min=1e-12)))


class TwoTowerModule(L.LightningModule):
    item_ids: torch.Tensor
    item_categories: torch.Tensor
    item_title: torch.Tensor
    item_numeric: torch.Tensor
    target_probs: torch.Tensor
    trained_items: torch.Tensor

    def __init__(
        self,
        model_config: TwoTowerConfig,
        items: ItemInputs,
        item_counts: np.ndarray,
        engine: NeuralSettings,
        training: TrainingSettings,
    ) -> None:
        super().__init__()
        self.model = TwoTower(model_config)
        self.engine_cfg = engine
        self.training_cfg = training
        self.n_items = int(item_counts.shape[0] - 1)
        self.full_softmax = self.n_items <= engine.full_softmax_items
        # The item feature table lives on the module so it follows the model to the accelerator.
        self.register_buffer("item_ids", items.ids, persistent=False)
        self.register_buffer("item_categories", items.categories, persistent=False)
        self.register_buffer("item_title", items.title, persistent=False)
        self.register_buffer("item_numeric", items.numeric, persistent=False)
        # With no metadata at all, an item without its id would be a constant vector: nothing to learn from it.
        has_metadata = bool(items.categories.any() or items.title.any() or items.numeric.numel())
        self.id_dropout = engine.feature_dropout if has_metadata else 0.0
        p = np.asarray(item_counts, dtype=np.float64)
        p[0] = 0.0
        self.register_buffer("target_probs", torch.from_numpy(p / max(p.sum(), 1.0)).float(), persistent=False)
        self.register_buffer("trained_items", torch.from_numpy(np.flatnonzero(p > 0)), persistent=False)

    @property
    def items(self) -> ItemInputs:
        return ItemInputs(self.item_ids, self.item_categories, self.item_title, self.item_numeric)

    def embed(self, indices: torch.Tensor, drop_ids: bool) -> torch.Tensor:
        """Item vectors (n, d) for distinct indices (n,); ``drop_ids`` hides the id embedding of a random share,
        so the tower also learns to place an item from its metadata alone (how a new item is embedded)."""
        x = self.items.index(indices)
        if drop_ids and self.id_dropout > 0:
            keep = torch.rand(indices.shape[0], device=indices.device) >= self.id_dropout
            x = ItemInputs(x.ids * keep, x.categories, x.title, x.numeric)
        return self.model.item_vectors(x)

    def loss(self, seqs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """seqs, targets (B, T) right-padded windows: inputs and the next item at every position.

        Small catalogues: softmax over every item. Large ones: over the batch's distinct targets plus uniform
        negatives, each logit corrected by log q."""
        mask = seqs > 0
        has_target = targets > 0
        positives = targets[has_target]  # (n,)
        if self.full_softmax:
            vecs = self.embed(torch.arange(self.n_items + 1, device=seqs.device), drop_ids=self.training)  # (N+1, d)
            users = self.model.user_vectors(vecs[seqs] * mask.unsqueeze(-1), mask)[has_target]  # (n, d)
            # Candidates: every item with training interactions. An item without any (a new item known by its
            # metadata) is never a target, so as a permanent negative it would teach "metadata-only = wrong".
            cand = self.trained_items
            table = torch.cat([vecs.new_zeros(1, vecs.shape[1]), vecs[cand]])  # row 0 pads, as full_softmax_ce wants
            labels = torch.searchsorted(cand, positives) + 1
            return full_softmax_ce(users / self.model.temperature, table, labels)
        cand = torch.unique(positives)
        n_uniform = self.engine_cfg.n_uniform_negatives
        if n_uniform:
            pool = self.trained_items  # uniform over the items that can be targets (see the full-softmax case)
            extra = pool[torch.randint(0, pool.shape[0], (n_uniform,), device=seqs.device)]
            cand = torch.unique(torch.cat([cand, extra]))
        needed = torch.unique(torch.cat([seqs[mask], cand]))  # sorted: searchsorted maps indices to rows
        vecs = self.embed(needed, drop_ids=self.training)  # (U, d)
        seq_vecs = vecs[torch.searchsorted(needed, seqs)] * mask.unsqueeze(-1)  # (B, T, d)
        users = self.model.user_vectors(seq_vecs, mask)[has_target]  # (n, d)
        cand_vecs = vecs[torch.searchsorted(needed, cand)]  # (C, d)
        labels = torch.searchsorted(cand, positives)
        log_q = inclusion_log_q(
            self.target_probs[cand], int(positives.shape[0]), n_uniform, int(self.trained_items.shape[0])
        )
        return sampled_softmax_loss(users, cand_vecs, labels, self.model.temperature, log_q)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        seqs, targets = batch
        loss = self.loss(seqs, targets)
        # Synced: under DDP the epoch's figures are means over every rank's batches, not rank zero's alone.
        self.log("train/loss", loss, on_step=True, on_epoch=True, batch_size=int((targets > 0).sum()), sync_dist=True)
        self.log("train/temperature", self.model.temperature.detach(), on_step=False, on_epoch=True, sync_dist=True)
        return loss

    def configure_optimizers(self) -> Any:
        return torch.optim.AdamW(
            weight_decay_groups(self.model, self.training_cfg.weight_decay),
            lr=self.training_cfg.lr,
        )

    @torch.inference_mode()
    def item_matrix(self) -> torch.Tensor:
        """Every item's vector (n_items + 1, d), row 0 zero."""
        out = self.model.item_vectors(self.items)
        out[0] = 0.0
        return out

    @torch.inference_mode()
    def score(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        """Full-catalogue scores (B, n_items + 1) for validation with the project's evaluator."""
        matrix = self.item_matrix()
        seqs, lengths = pad_histories(histories, self.model.cfg.max_len)
        seqs, lengths = seqs.to(matrix.device), lengths.to(matrix.device)
        users = self.model.last_user_vectors(matrix[seqs], lengths)
        scores = users @ matrix.T / self.model.temperature
        scores[:, 0] = -torch.inf
        return scores.float().cpu()
