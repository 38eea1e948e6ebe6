"""Distributed training: which process is rank zero, and what rank zero tells the others.

    if is_rank_zero(): tracker = Tracker.start(...)             # known from the environment, before any Trainer
    metrics = broadcast_json(trainer, metrics)                   # rank zero's value, on every rank
    weights_digest(module)                                       # sha256 of the weights, to compare ranks

Under ``training.strategy = "ddp"`` every rank runs the whole ``recengine train`` command: Lightning's own launcher
re-runs it for ranks other than zero, torchrun or SLURM start every rank themselves. Rank zero alone opens the
MLflow run, evaluates, writes the artifact and moves ``CURRENT``; the other ranks train, then return. Everything
that decides when training stops or which epoch is kept comes from rank zero, so every rank keeps the same weights.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    import lightning as L


def is_rank_zero() -> bool:
    """Whether this process is rank zero of its training run (always, when training is not distributed).

    Read from what launchers set before a rank starts: ``RANK`` (torchrun, Kubeflow and MPI-style launchers),
    Lightning's own ``NODE_RANK`` and ``LOCAL_RANK`` (its launcher starts rank zero as the user did, with neither,
    and re-runs the command for the others with them), then SLURM's and LSF's. ``LOCAL_RANK`` goes before
    ``SLURM_PROCID`` because processes Lightning starts inside a one-task SLURM allocation all inherit
    ``SLURM_PROCID=0``, as Lightning's own rank lookup notes. ``training.run`` checks the answer against the
    Trainer's ``global_rank`` once one is built.
    """
    env = os.environ
    if "RANK" in env:
        return int(env["RANK"]) == 0
    if "LOCAL_RANK" in env or "NODE_RANK" in env:
        return int(env.get("NODE_RANK", "0")) == 0 and int(env.get("LOCAL_RANK", "0")) == 0
    for key in ("SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if key in env:
            return int(env[key]) == 0
    return True


def broadcast_json(trainer: L.Trainer, value: Any) -> Any:
    """Rank zero's ``value`` (anything ``json`` encodes) on every rank; ``value`` itself without distribution.

    Sent as the UTF-8 bytes of its JSON text, in tensors: Lightning's ``strategy.broadcast`` would pickle it.
    Floats survive exactly (JSON keeps their shortest round-tripping repr). Every rank must call it.
    """
    if trainer.world_size == 1:
        return value
    import torch.distributed as dist

    device = trainer.strategy.root_device
    payload = json.dumps(value).encode() if trainer.is_global_zero else b""
    size = torch.tensor([len(payload)], dtype=torch.int64, device=device)
    dist.broadcast(size, src=0)
    buffer = torch.zeros(int(size.item()), dtype=torch.uint8, device=device)
    if trainer.is_global_zero:
        buffer.copy_(torch.frombuffer(bytearray(payload), dtype=torch.uint8))
    dist.broadcast(buffer, src=0)
    return json.loads(buffer.cpu().numpy().tobytes().decode())


def agree_on_weights(trainer: L.Trainer, module: torch.nn.Module) -> str:
    """This rank's :func:`weights_digest`, after checking that every rank holds the same weights.

    Each rank logs its digest; a rank whose weights differ fails every rank with the same error, rather than
    rank zero exporting a model the others did not train. Every rank must call it (an all-gather).
    """
    import torch.distributed as dist

    from recengine.observability.logging import get_logger

    digest = weights_digest(module)
    mine = torch.tensor(list(bytes.fromhex(digest)), dtype=torch.int64, device=trainer.strategy.root_device)
    gathered = [torch.empty_like(mine) for _ in range(trainer.world_size)]
    dist.all_gather(gathered, mine)
    digests = [bytes(row.cpu().tolist()).hex() for row in gathered]
    get_logger("recengine.training").info(
        "weights trained",
        rank=trainer.global_rank,
        world_size=trainer.world_size,
        weights_sha256=digest,
    )
    differ = [rank for rank, d in enumerate(digests) if d != digests[0]]
    if differ:
        raise RuntimeError(f"distributed training ended with different weights on ranks {differ} than on rank 0")
    return digest


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 over the state dict's names, dtypes, shapes and bytes, in key order: equal iff the weights are."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
