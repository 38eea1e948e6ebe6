"""Distributed training's parts: who is rank zero, what rank zero shares, what the other ranks leave alone.

The collectives run in two real processes over gloo (``ddp_workers.py``); ``test_ddp.py`` trains end to end.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch.multiprocessing as mp

from recengine.data.dataset import Dataset
from recengine.errors import ConfigError, DataError
from recengine.settings import PopularitySettings, TrainingSettings, TransformerSettings
from recengine.training import run
from recengine.training.datamodule import SequenceDataModule
from recengine.training.distributed import is_rank_zero, weights_digest
from recengine.training.tracking import NullTracker
from tests.training import ddp_workers
from tests.training.test_ddp import LAUNCHER_VARIABLES, free_port


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize(
    ("env", "zero"),
    [
        ({}, True),
        ({"RANK": "0", "LOCAL_RANK": "0"}, True),  # torchrun
        ({"RANK": "3", "LOCAL_RANK": "0"}, False),  # torchrun, first process of the second node
        ({"LOCAL_RANK": "0", "NODE_RANK": "0"}, True),  # Lightning's launcher once it has started the others
        ({"LOCAL_RANK": "1", "NODE_RANK": "0", "WORLD_SIZE": "2"}, False),  # ... and the process it re-ran
        ({"NODE_RANK": "1"}, False),  # Lightning's launcher, started by hand on the second node
        ({"SLURM_PROCID": "0"}, True),
        ({"SLURM_PROCID": "2"}, False),
        ({"SLURM_PROCID": "0", "LOCAL_RANK": "1"}, False),  # Lightning's children inside a one-task allocation
    ],
)
def test_rank_zero_is_read_from_what_the_launchers_set(
    clean_env: pytest.MonkeyPatch, env: dict[str, str], zero: bool
) -> None:
    for name, value in env.items():
        clean_env.setenv(name, value)
    assert is_rank_zero() is zero


def test_another_rank_trains_but_tracks_writes_and_promotes_nothing(
    small_dataset: Dataset, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("RANK", "1")
    artifacts = tmp_path / "artifacts"
    with run.tracked_run(TrainingSettings(), artifacts, "popularity", small_dataset) as tracker:
        assert isinstance(tracker, NullTracker)
    result = run.train("popularity", small_dataset, PopularitySettings(), TrainingSettings(), artifacts)
    assert result is None
    assert not artifacts.exists() and not (tmp_path / "mlruns").exists()


def test_a_rank_the_trainer_disagrees_on_fails_before_training(
    small_dataset: Dataset, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("RANK", "1")  # but one device and no strategy: Lightning makes this process rank zero
    training = TrainingSettings(epochs=1, accelerator="cpu", devices=1, valid_users=None)
    section = TransformerSettings(max_len=20, d_model=16, n_layers=1, n_heads=2)
    with pytest.raises(ConfigError, match="rank 0 to Lightning but was not taken for rank zero"):
        run.fit("transformer", small_dataset, section, training, tmp_path)


def test_a_data_set_too_small_for_its_ranks_is_a_clear_error(small_dataset: Dataset) -> None:
    dm = SequenceDataModule(small_dataset, max_len=20, batch_size=10_000)
    dm.trainer = SimpleNamespace(global_rank=0, world_size=2)  # type: ignore[assignment]
    with pytest.raises(DataError, match="fewer batches than the 2 ranks"):
        dm.train_dataloader()


def test_the_weights_digest_sees_every_tensor() -> None:
    import torch

    torch.manual_seed(0)
    a = torch.nn.Linear(3, 2)
    torch.manual_seed(0)
    b = torch.nn.Linear(3, 2)
    assert weights_digest(a) == weights_digest(b)
    with torch.no_grad():
        b.bias[1] += 1e-7
    assert weights_digest(a) != weights_digest(b)


@pytest.mark.ddp
def test_rank_zero_validates_and_every_rank_agrees_over_gloo(small_dataset: Dataset, tmp_path: Path) -> None:
    assert small_dataset.path is not None
    mp.spawn(
        ddp_workers.collectives,
        args=(2, free_port(), str(small_dataset.path), str(tmp_path)),
        nprocs=2,
        join=True,
    )
    zero, one = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))

    # Rank zero's figures on every rank, floats to the last bit.
    assert zero["broadcast"] == one["broadcast"] == {"valid/ndcg@10": 0.1, "n": 0, "nested": [1e-300, 0.0]}
    # Validation scored once, on rank zero; rank one took its figures (its own model would have scored otherwise).
    assert zero["scored_users"] > 0 and one["scored_users"] == 0
    assert "value" in zero["validation"] and zero["validation"] == one["validation"]
    assert zero["validation"]["value"]["valid/ndcg@10"] >= 0.0
    assert zero["still_training"] and one["still_training"]
    # A validation that fails on rank zero fails every rank, instead of leaving the others waiting.
    assert zero["failed_validation"] == {"error": "ValueError", "message": "scores went NaN"}
    assert one["failed_validation"]["error"] == "RuntimeError"
    assert "validation failed on rank 0: ValueError: scores went NaN" in one["failed_validation"]["message"]
    # Equal weights agree; a rank with other weights fails every rank.
    assert zero["same_weights"] == one["same_weights"] and "value" in zero["same_weights"]
    for seen in (zero, one):
        assert seen["different_weights"]["error"] == "RuntimeError"
        assert "different weights on ranks [1]" in seen["different_weights"]["message"]


@pytest.mark.parametrize("strategy", ["ddp_spawn", "ddp_fork", "ddp_notebook"])
def test_strategies_that_train_in_child_processes_are_refused(strategy: str, tmp_path: Path) -> None:
    from recengine.training.trainer import build_trainer

    with pytest.raises(ConfigError, match=f"training.strategy = '{strategy}' is not supported: use 'ddp'"):
        build_trainer(TrainingSettings(strategy=strategy, accelerator="cpu"), tmp_path)


def test_each_rank_draws_its_own_noise_once_training_starts() -> None:
    import torch

    from recengine.training.trainer import RankSeed

    def draws(rank: int, world: int) -> torch.Tensor:
        torch.manual_seed(123)
        RankSeed(7).on_train_start(ddp_workers.fake_trainer(rank, world), None)  # type: ignore[arg-type]
        return torch.rand(4)

    assert not torch.equal(draws(0, 2), draws(1, 2))
    alone = draws(0, 1)
    torch.manual_seed(123)
    assert torch.equal(alone, torch.rand(4))  # one process: its random stream is left alone
