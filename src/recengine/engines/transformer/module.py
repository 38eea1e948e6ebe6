"""The training task around :class:`SASRec`: loss, optimiser, LR schedule, and scoring for validation."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch

from recengine.engines.sequences import pad_histories
from recengine.engines.transformer.model import SASRec, SASRecConfig
from recengine.settings import TrainingSettings, TransformerSettings
from recengine.training.trainer import weight_decay_groups


class SASRecModule(L.LightningModule):
    def __init__(
        self,
        model_config: SASRecConfig,
        engine: TransformerSettings,
        training: TrainingSettings,
        item_counts: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        self.model = SASRec(model_config)
        self.engine = engine
        self.training_cfg = training
        probs = None
        if item_counts is not None and engine.loss == "sampled_softmax":
            # Negatives by popularity^0.75 (word2vec's smoothing): popular enough to be hard, log-Q corrects the bias.
            p = np.asarray(item_counts, dtype=np.float64) ** 0.75
            p[0] = 0.0
            probs = torch.from_numpy(p / p.sum()).float()
        self.register_buffer("sampling_probs", probs, persistent=False)

    def _sampling_probs(self) -> torch.Tensor | None:
        probs = self.sampling_probs
        return probs if isinstance(probs, torch.Tensor) else None

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        seqs, targets = batch
        loss = self.model.loss(
            seqs,
            targets,
            kind=self.engine.loss,
            n_negatives=self.engine.n_negatives,
            sampling_probs=self._sampling_probs(),
            ahead=self.engine.ahead,
            ahead_decay=self.engine.ahead_decay,
        )
        # Synced: under DDP the epoch's figure is the mean over every rank's batches, not rank zero's alone.
        self.log("train/loss", loss, on_step=True, on_epoch=True, batch_size=int((targets > 0).sum()), sync_dist=True)
        return loss

    def configure_optimizers(self) -> Any:
        opt = torch.optim.AdamW(
            weight_decay_groups(self.model, self.training_cfg.weight_decay),
            lr=self.training_cfg.lr,
            betas=(0.9, 0.98),
        )
        warmup = self.training_cfg.warmup_steps
        # This rank's steps: under DDP each rank steps through its share of the batches (training/datamodule.py).
        total = max(1, int(self.trainer.estimated_stepping_batches))
        cosine = self.training_cfg.lr_schedule == "cosine"

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            if not cosine:
                return 1.0
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return 0.5 * (1.0 + math.cos(math.pi * progress))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    @torch.inference_mode()
    def score(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        """Scores for validation (B, N + 1); histories are never empty here (users with a target have a past)."""
        seqs, lengths = pad_histories(histories, self.model.config.max_len)
        return self.model.scores(seqs.to(self.device), lengths.to(self.device)).float().cpu()
