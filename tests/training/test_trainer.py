"""The Trainer built from settings, validation-driven early stopping and best-weight selection."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping
from torch.utils.data import DataLoader, TensorDataset

from recengine.data.dataset import Dataset
from recengine.errors import ConfigError
from recengine.settings import TrainingSettings
from recengine.training.tracking import Tracker
from recengine.training.trainer import MONITOR, RankingValidation, build_trainer


class GoodThenBad(L.LightningModule):
    """Scores by popularity in epoch 0, by reversed popularity afterwards: validation peaks at epoch 0."""

    def __init__(self, counts: np.ndarray) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.register_buffer("sign", torch.ones(1))
        self.counts = torch.from_numpy(counts.astype(np.float32))

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self.current_epoch > 0:
            self.sign.fill_(-1.0)
        loss = ((self.w - batch[0]) ** 2).mean()
        self.log("train/loss", loss, on_epoch=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def score(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        return (self.sign * self.counts).unsqueeze(0).expand(len(histories), -1).clone()


def loader() -> DataLoader[tuple[torch.Tensor, ...]]:
    return DataLoader(TensorDataset(torch.ones(8, 1)), batch_size=4)


def test_settings_reach_the_trainer(tmp_path: Path) -> None:
    training = TrainingSettings(
        epochs=7, grad_clip=0.5, max_minutes=2.0, accelerator="cpu", devices=1, precision="bf16-mixed"
    )
    trainer = build_trainer(training, tmp_path)
    assert trainer.max_epochs == 7
    assert trainer.gradient_clip_val == 0.5
    assert trainer.precision == "bf16-mixed"
    assert trainer.num_devices == 1
    assert trainer.checkpoint_callback is None  # nothing written to disk
    assert trainer.default_root_dir == str(tmp_path)
    stop = trainer.fit_loop.max_time if hasattr(trainer.fit_loop, "max_time") else None
    timers = [c for c in trainer.callbacks if type(c).__name__ == "Timer"]
    assert stop is not None or timers
    if timers:
        assert timers[0]._duration == timedelta(minutes=2).total_seconds()


def test_wandb_without_the_extra_is_a_config_error(tmp_path: Path) -> None:
    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here; this checks the path without the extra")
    with pytest.raises(ConfigError, match=r"recengine\[wandb\]"):
        build_trainer(TrainingSettings(wandb=True, accelerator="cpu"), tmp_path)


def test_validation_stops_early_and_restores_the_best_epoch(small_dataset: Dataset, tmp_path: Path) -> None:
    training = TrainingSettings(epochs=20, patience=2, accelerator="cpu", devices=1)
    validation = RankingValidation(small_dataset, max_users=100)
    messages: list[tuple[str, int | None, int | None]] = []
    tracker = Tracker.start(training, tmp_path, run_name="toy")
    trainer = build_trainer(
        training,
        tmp_path,
        callbacks=[validation],
        progress=lambda m, d, t: messages.append((m, d, t)),
        tracker=tracker,
    )
    assert any(isinstance(c, EarlyStopping) for c in trainer.callbacks)
    module = GoodThenBad(small_dataset.item_counts())
    trainer.fit(module, train_dataloaders=loader())

    assert validation.best_epoch == 0
    assert trainer.current_epoch == 1 + training.patience  # epoch 0 best, then `patience` worse epochs
    assert float(module.sign) == 1.0  # the best epoch's state is back
    assert len(validation.history) == trainer.current_epoch
    assert float(trainer.callback_metrics[MONITOR]) < validation.best_score
    last = [m for m, _, _ in messages if "valid ndcg@10" in m][-1]
    assert last.startswith(f"epoch {trainer.current_epoch}/20") and "loss" in last
    run = tracker.run_dir()
    assert run is not None
    assert len((run / "metrics" / "valid" / "ndcg_at_10").read_text().splitlines()) == trainer.current_epoch
    assert (run / "metrics" / "epoch_cpu_seconds").is_file()
    assert not list(Path.cwd().glob("lightning_logs"))


def test_validation_needs_a_scoring_module(small_dataset: Dataset, tmp_path: Path) -> None:
    class NoScore(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
            return ((self.w - batch[0]) ** 2).mean()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer = build_trainer(
        TrainingSettings(epochs=1, accelerator="cpu", devices=1),
        tmp_path,
        callbacks=[RankingValidation(small_dataset)],
    )
    with pytest.raises(TypeError, match="score"):
        trainer.fit(NoScore(), train_dataloaders=loader())


class GoodThenBadWithWarmup(GoodThenBad):
    """The same module with a step-wise warm-up schedule, which rewrites the rate from its base every step."""

    def configure_optimizers(self) -> dict[str, object]:
        opt = torch.optim.SGD(self.parameters(), lr=0.1)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / 2))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


@pytest.mark.parametrize("module_cls", [GoodThenBad, GoodThenBadWithWarmup])
def test_plateau_schedule_cuts_the_rate_after_flat_epochs(
    small_dataset: Dataset, tmp_path: Path, module_cls: type[GoodThenBad]
) -> None:
    training = TrainingSettings(
        epochs=8, patience=100, lr_schedule="plateau", plateau_patience=2, plateau_factor=0.5, accelerator="cpu"
    )
    validation = RankingValidation(small_dataset, max_users=50)
    trainer = build_trainer(training, tmp_path, callbacks=[validation])
    module = module_cls(small_dataset.item_counts())
    rates: list[float] = []

    class Record(L.Callback):
        def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            rates.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer.callbacks.append(Record())
    trainer.fit(module, train_dataloaders=loader())
    # Best at epoch 0; cuts after epochs 2, 4 and 6 (two flat epochs each time).
    assert validation.best_epoch == 0
    assert rates[1:] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025, 0.0125])
    # Without the plateau schedule the rate never moves.
    trainer = build_trainer(training.model_copy(update={"lr_schedule": "constant"}), tmp_path, callbacks=[validation])
    assert not [c for c in trainer.callbacks if type(c).__name__ == "PlateauDecay"]


class Climb(L.LightningModule):
    """SGD on loss = -w with lr 1: the raw weight after step s is exactly s."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return -self.w.sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=1.0)


def test_weight_average_is_what_epochs_end_with_and_training_resumes_from_raw(tmp_path: Path) -> None:
    seen: list[tuple[str, float]] = []

    class Record(L.Callback):
        def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            seen.append(("start", float(pl_module.w.detach())))

        def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            seen.append(("end", float(pl_module.w.detach())))

    training = TrainingSettings(epochs=3, average_epochs=1.0, grad_clip=0.0, accelerator="cpu", devices=1)
    trainer = build_trainer(training, tmp_path, callbacks=[Record()])
    module = Climb()
    trainer.fit(module, train_dataloaders=DataLoader(TensorDataset(torch.ones(40, 1)), batch_size=4))  # 10 steps

    # The same average computed by hand: decay 1 - 1/(1 epoch × 10 steps), faster at first.
    average, expected_ends = 0.0, []
    for step in range(1, 31):
        decay = min(0.9, (1.0 + step) / (10.0 + step))
        average = decay * average + (1 - decay) * step
        if step % 10 == 0:
            expected_ends.append(average)
    ends = [w for kind, w in seen if kind == "end"]
    starts = [w for kind, w in seen if kind == "start"]
    assert ends == pytest.approx(expected_ends, rel=1e-5)
    assert starts == pytest.approx([0.0, 10.0, 20.0])  # each epoch trains on from the raw weights
    assert float(module.w.detach()) == pytest.approx(expected_ends[-1], rel=1e-5)  # training ends on the average
    assert all(end < raw for end, raw in zip(ends, [10, 20, 30], strict=True))
