"""A Lightning ``Trainer`` built from :class:`TrainingSettings`, and the callbacks every engine's training shares.

    validation = RankingValidation(dataset, max_users=settings.valid_users)   # valid NDCG@10, best weights in memory
    trainer = build_trainer(settings, tracking_dir, callbacks=[validation], progress=report, tracker=tracker)
    trainer.fit(module, datamodule)                                          # best weights restored at the end

A module trained this way implements :class:`Scoring` (``score(histories) -> (B, n_items + 1)``), so validation uses
the project's own full-ranking evaluator — the figure used to stop and to pick the best epoch is the one reported.
No checkpoint files are written: the best weights are kept in memory (models here are small) and the artifact is the
only output. Accelerator, devices, strategy (``ddp`` for several GPUs or nodes), node count and precision come from
the settings; Lightning does the distribution. Under DDP, rank zero validates and every rank takes its figures, so
all of them stop at the same epoch and keep the same weights (docs/training.md).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping

from recengine.data.dataset import Dataset
from recengine.errors import ConfigError
from recengine.evaluation import Scorer
from recengine.observability.logging import adopt_library_loggers
from recengine.settings import TrainingSettings
from recengine.training.distributed import broadcast_json
from recengine.training.task import Progress
from recengine.training.tracking import Tracker
from recengine.training.validation import MONITOR, validation_metrics


@runtime_checkable
class Scoring(Protocol):
    def score(self, histories: Sequence[np.ndarray]) -> torch.Tensor: ...


class RankingValidation(Callback):
    """After every training epoch: full-ranking metrics on the validation split, logged as ``valid/<metric>``.

    Keeps a copy of the best weights (by validation NDCG@10) and loads them back when training ends, which is
    the checkpoint selection. ``max_users`` evaluates a fixed, evenly spread subset to keep validation cheap.
    """

    def __init__(self, dataset: Dataset, max_users: int | None = None, batch_size: int = 1024) -> None:
        self.dataset = dataset
        self.max_users = max_users
        self.batch_size = batch_size
        self.best_score = -math.inf
        self.best_epoch = -1
        self.best_state: dict[str, torch.Tensor] | None = None
        self.history: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not isinstance(pl_module, Scoring):
            raise TypeError(f"{type(pl_module).__name__} has no score(histories) method to validate with")
        metrics = self._rank_zero_metrics(trainer, pl_module, pl_module.score)
        for name, value in metrics.items():
            # Every rank logs rank zero's figures; a max over equal values syncs them exactly (a mean might not).
            pl_module.log(name, value, on_epoch=True, logger=bool(trainer.loggers), sync_dist=True, reduce_fx="max")
        score = metrics[MONITOR]
        self.history.append({"epoch": float(trainer.current_epoch), **metrics})
        if score > self.best_score:
            self.best_score = score
            self.best_epoch = trainer.current_epoch
            self.best_state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}

    def _rank_zero_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule, score: Scorer) -> dict[str, float]:
        """Validation on rank zero, its figures (or its error) on every rank.

        Under DDP every rank must stop at the same epoch and keep the same one, so one rank scores and the others
        take its figures: even on equal weights, scores from other devices need not agree to the last bit.
        """
        error: Exception | None = None
        metrics: dict[str, float] = {}
        if trainer.is_global_zero:
            was_training = pl_module.training
            pl_module.eval()
            try:
                metrics = validation_metrics(score, self.dataset, self.max_users, self.batch_size)
            except Exception as exc:
                if trainer.world_size == 1:
                    raise
                error = exc  # the other ranks wait in the broadcast below: tell them, then raise
            finally:
                pl_module.train(was_training)
        if trainer.world_size > 1:
            failure = None if error is None else f"validation failed on rank 0: {type(error).__name__}: {error}"
            shared = broadcast_json(trainer, {"metrics": metrics, "failure": failure})
            if error is not None:
                raise error
            if shared["failure"] is not None:
                raise RuntimeError(shared["failure"])
            metrics = shared["metrics"]
        return metrics

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.best_state is not None:
            pl_module.load_state_dict(self.best_state)


class WeightAverage(Callback):
    """An exponential moving average of the weights, updated after every optimiser step, and swapped in at the end
    of each epoch: validation, the best-epoch snapshot and the exported model all use the average.

    With the heavy dropout that sparse data needs, the raw weights move noisily from step to step; their running
    average over about the last ``epochs`` epochs ranks better and its validation curve is smoother, so the epoch
    picked on it is picked on signal rather than on noise. Register it before :class:`RankingValidation`.
    """

    def __init__(self, epochs: float) -> None:
        if epochs <= 0:
            raise ValueError(f"epochs must be positive, got {epochs}")
        self.epochs = epochs
        self.decay = 0.0
        self.updates = 0
        self.average: list[torch.Tensor] | None = None
        self.swapped = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # This rank's optimiser steps per epoch (under DDP each rank runs its share of the batches).
        steps = trainer.num_training_batches
        steps = 1 if steps in (None, math.inf) else max(1, int(steps))
        self.decay = 1.0 - 1.0 / max(1.0, self.epochs * steps)

    @staticmethod
    def _weights(pl_module: L.LightningModule) -> list[torch.Tensor]:
        return [p.data for p in pl_module.parameters()]

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        weights = self._weights(pl_module)
        if self.average is None:
            self.average = [w.detach().clone() for w in weights]
        # Early on the average forgets faster (TensorFlow's num_updates rule), so it is not anchored to the init.
        self.updates += 1
        decay = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        torch._foreach_lerp_(self.average, weights, 1.0 - decay)

    def _swap(self, pl_module: L.LightningModule) -> None:
        if self.average is None:
            return
        for w, a in zip(self._weights(pl_module), self.average, strict=True):
            held = w.clone()
            w.copy_(a)
            a.copy_(held)
        self.swapped = not self.swapped

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.swapped:
            self._swap(pl_module)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.swapped:  # training continues from the raw weights
            self._swap(pl_module)


class PlateauDecay(Callback):
    """Multiplies every learning rate by ``factor`` once validation NDCG@10 has not improved for ``patience``
    epochs, then waits ``patience`` more epochs before the next cut.

    Scales the schedulers' base rates as well as the optimisers' current ones, so a warm-up (or any other
    multiplicative schedule) keeps working on the reduced rate. Must run after :class:`RankingValidation`.
    """

    def __init__(self, validation: RankingValidation, patience: int, factor: float) -> None:
        self.validation = validation
        self.patience = patience
        self.factor = factor
        self.last_cut = -1
        self.cuts: list[int] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        since = epoch - max(self.validation.best_epoch, self.last_cut)
        if since < self.patience:
            return
        self.last_cut = epoch
        self.cuts.append(epoch)
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] *= self.factor
        for config in trainer.lr_scheduler_configs:
            base = getattr(config.scheduler, "base_lrs", None)
            if base is not None:
                config.scheduler.base_lrs = [lr * self.factor for lr in base]


class RankSeed(Callback):
    """Under DDP, one torch seed per rank once training starts, so each rank draws its own dropout masks and sampled
    negatives: with one seed, every rank would repeat rank zero's draws on its batches. The weights still agree
    (DDP averages the gradients); the model's initialisation, seeded before, is the same on every rank."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.world_size > 1:
            torch.manual_seed(self.seed + trainer.global_rank)


class EpochTracking(Callback):
    """Sends each epoch's logged metrics (train loss, validation figures, timing) to the MLflow run."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        self._epoch_started = 0.0
        self._epoch_cpu = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_started = time.perf_counter()
        self._epoch_cpu = time.process_time()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_rank != 0:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        metrics["epoch_seconds"] = time.perf_counter() - self._epoch_started
        # CPU seconds of this process: on a shared machine, the work done, whatever the wall clock says.
        metrics["epoch_cpu_seconds"] = time.process_time() - self._epoch_cpu
        if trainer.optimizers:
            metrics["lr"] = float(trainer.optimizers[0].param_groups[0]["lr"])
        self.tracker.log_metrics(metrics, step=trainer.current_epoch)


class ProgressReport(Callback):
    """Calls ``progress(message, epochs_done, max_epochs)`` with the epoch, running loss and validation NDCG@10."""

    def __init__(self, progress: Progress, every_n_batches: int = 20) -> None:
        self.progress = progress
        self.every = max(1, every_n_batches)
        self._ndcg: float | None = None

    def _message(self, trainer: L.Trainer, batch: int | None = None) -> str:
        loss = trainer.callback_metrics.get("train/loss_step", trainer.callback_metrics.get("train/loss"))
        parts = [f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"]
        if batch is not None and trainer.num_training_batches not in (None, math.inf):
            parts.append(f"batch {batch + 1}/{int(trainer.num_training_batches)}")
        if loss is not None:
            parts.append(f"loss {float(loss):.4f}")
        if self._ndcg is not None:
            parts.append(f"valid ndcg@10 {self._ndcg:.4f}")
        return " · ".join(parts)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_rank == 0 and batch_idx % self.every == 0:
            self.progress(self._message(trainer, batch_idx), trainer.current_epoch, trainer.max_epochs)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get(MONITOR)
        if value is not None:
            self._ndcg = float(value)
        if trainer.global_rank == 0:
            self.progress(self._message(trainer), trainer.current_epoch + 1, trainer.max_epochs)


def wandb_logger(training: TrainingSettings, save_dir: Path, run_name: str) -> Any:
    """Lightning's Weights & Biases logger, offline unless a key is configured; needs ``recengine[wandb]``."""
    import importlib.util
    import os

    if importlib.util.find_spec("wandb") is None:
        raise ConfigError(
            "training.wandb = true needs the Weights & Biases client: pip install 'recengine[wandb]' "
            "(or set training.wandb = false)"
        )
    from lightning.pytorch.loggers import WandbLogger

    offline = not os.environ.get("WANDB_API_KEY")
    return WandbLogger(project=training.experiment, name=run_name, save_dir=str(save_dir), offline=offline)


class _LightningChatter(logging.Filter):
    """Lightning's start-up lines that say nothing about this run: hardware it looked for and did not find, an
    advertisement, and the end of a fit that the progress display already shows. Real warnings pass."""

    PREFIXES = (
        "GPU available: False",
        "TPU available: False",
        "HPU available: False",
        "\N{ELECTRIC LIGHT BULB} Tip:",
        "`Trainer.fit` stopped:",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO or not record.getMessage().startswith(self.PREFIXES)


def quiet_lightning() -> None:
    """Keep what is not ours off a user's screen, scoped to those very messages (idempotent)."""
    chatter = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _LightningChatter) for f in chatter.filters):
        chatter.addFilter(_LightningChatter())
    # torch 2.13 deprecates a pytree class that Lightning 2.x still uses, once per training run.
    warnings.filterwarnings(
        "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
    )


def build_trainer(
    training: TrainingSettings,
    tracking_dir: Path,
    callbacks: Sequence[Callback] = (),
    progress: Progress | None = None,
    tracker: Tracker | None = None,
    run_name: str = "train",
) -> L.Trainer:
    """A Trainer from the settings. ``callbacks`` run first, so early stopping sees this epoch's validation.

    With ``training.average_epochs`` set, the weights' moving average over about that many epochs is what
    validation scores and what training leaves in the module.
    """
    if any(word in training.strategy for word in ("spawn", "fork", "notebook")):
        # Those run fit in child processes and hand back only the weights: the run's validation history, best
        # epoch and the ranks' agreement would stay in the children.
        raise ConfigError(
            f"training.strategy = {training.strategy!r} is not supported: use 'ddp' (one process per device, "
            "started by Lightning's launcher, torchrun or srun; see docs/training.md)"
        )
    adopt_library_loggers()  # Lightning's import gave it a console handler: no line twice where logging is set up
    quiet_lightning()
    if training.num_threads is not None:
        torch.set_num_threads(training.num_threads)
    L.seed_everything(training.seed, workers=True, verbose=False)
    all_callbacks: list[Callback] = list(callbacks)
    if training.average_epochs is not None:
        all_callbacks.insert(0, WeightAverage(training.average_epochs))
    validation = next((c for c in callbacks if isinstance(c, RankingValidation)), None)
    if validation is not None and training.lr_schedule == "plateau":
        all_callbacks.append(PlateauDecay(validation, training.plateau_patience, training.plateau_factor))
    if validation is not None:
        all_callbacks.append(
            EarlyStopping(monitor=MONITOR, mode="max", patience=training.patience, check_on_train_epoch_end=True)
        )
    all_callbacks.append(RankSeed(training.seed))
    if tracker is not None:
        all_callbacks.append(EpochTracking(tracker))
    if progress is not None:
        all_callbacks.append(ProgressReport(progress))
    logger: Any = wandb_logger(training, Path(tracking_dir), run_name) if training.wandb else False
    return L.Trainer(
        accelerator=training.accelerator,
        devices=training.devices,
        strategy=training.strategy,
        num_nodes=training.num_nodes,
        precision=training.precision,  # type: ignore[arg-type]
        max_epochs=training.epochs,
        max_time=timedelta(minutes=training.max_minutes) if training.max_minutes else None,
        gradient_clip_val=training.grad_clip or None,
        callbacks=all_callbacks,
        logger=logger,
        # Lightning's default checkpoint and log folders would land in the working directory.
        enable_checkpointing=False,
        default_root_dir=str(tracking_dir),
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        # The data modules shard their own length-bucketed batches across ranks.
        use_distributed_sampler=False,
        deterministic="warn" if training.accelerator != "cpu" else True,
        log_every_n_steps=10,
    )


def weight_decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups with decay on dense matrices only: decaying embeddings would shrink rare items every
    step, seen or not."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        (decay if p.ndim >= 2 and "emb" not in name else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
