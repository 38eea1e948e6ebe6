"""Rank processes for the distributed tests: each joins a real gloo process group and records what it saw.

Spawned by ``torch.multiprocessing``, so everything here is importable at module level; each rank writes its
observations to ``<out>/rank<R>.json`` for the test to compare.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from recengine.data.dataset import Dataset
from recengine.training.distributed import agree_on_weights, broadcast_json
from recengine.training.trainer import RankingValidation


def fake_trainer(rank: int, world: int) -> Any:
    """What the distributed helpers read from a Lightning Trainer."""
    return SimpleNamespace(
        world_size=world,
        global_rank=rank,
        is_global_zero=rank == 0,
        strategy=SimpleNamespace(root_device=torch.device("cpu")),
    )


def _outcome(call: Any) -> dict[str, Any]:
    try:
        return {"value": call()}
    except Exception as exc:
        return {"error": type(exc).__name__, "message": str(exc)}


def collectives(rank: int, world: int, port: int, data_dir: str, out: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        trainer = fake_trainer(rank, world)
        dataset = Dataset.load(Path(data_dir))
        seen: dict[str, Any] = {}

        # Each rank offers its own value; every rank must come out with rank zero's, to the last bit.
        offered = {"valid/ndcg@10": 0.1 + rank / 3, "n": rank, "nested": [1e-300, rank * 7.0]}
        seen["broadcast"] = broadcast_json(trainer, offered)

        calls: list[int] = []
        rng = np.random.default_rng(rank)  # a different model on each rank: only rank zero's may count

        def score(histories: Sequence[np.ndarray]) -> torch.Tensor:
            calls.append(len(histories))
            return torch.from_numpy(rng.standard_normal((len(histories), dataset.n_items + 1)))

        module = torch.nn.Linear(2, 2)
        validation = RankingValidation(dataset)
        seen["validation"] = _outcome(lambda: validation._rank_zero_metrics(trainer, module, score))
        seen["scored_users"] = sum(calls)
        seen["still_training"] = module.training

        def failing(histories: Sequence[np.ndarray]) -> torch.Tensor:
            raise ValueError("scores went NaN")

        seen["failed_validation"] = _outcome(lambda: validation._rank_zero_metrics(trainer, module, failing))

        torch.manual_seed(0)
        same = torch.nn.Linear(4, 3)
        seen["same_weights"] = _outcome(lambda: agree_on_weights(trainer, same))
        torch.manual_seed(rank)
        different = torch.nn.Linear(4, 3)
        seen["different_weights"] = _outcome(lambda: agree_on_weights(trainer, different))
        Path(out, f"rank{rank}.json").write_text(json.dumps(seen))
    finally:
        dist.destroy_process_group()
