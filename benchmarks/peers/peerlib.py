"""Peer side of the peers benchmark: read the exported data set, run the epoch loop, write the lists.

Imported by the peer scripts (``rectools_peer.py``, ``recbole_peer.py``, ``fake_peer.py``), which run inside the
peer's own virtual environment: this module needs numpy only, never recengine.

The work folder (written by ``run.py``):

- ``data/train.npz`` — the training interactions, one array each: ``user``, ``item`` (our 1-based indices, used
  by the peers as external ids), ``timestamp`` (as read), ``position`` (0, 1, … in each user's time order: the
  order to train on; it breaks timestamp ties the way our split did)
- ``data/cases.npz`` — for ``valid`` and ``test``: ``{split}_users``, the histories as ``{split}_hist_items`` cut
  at ``{split}_hist_offsets`` (everything before the split, time order), the targets as ``{split}_targets`` cut at
  ``{split}_target_offsets``; and ``n_items``
- ``data/meta.json`` — sizes and the data set's content hash

What the peer writes under ``out/``:

- ``progress.json`` — the validation curve (``epoch``, ``valid_ndcg@10``, ``train_s``, ``eval_s``, ``pid``,
  ``commit``), the best epoch, the checkpoint to resume from, and ``stop_reason`` (``early_stopped``,
  ``max_epochs``, ``max_hours``) once the loop has ended; rewritten after every epoch, once that epoch's
  checkpoint is on disk
- ``ckpt/epoch-N/`` — the peer's own checkpoint of the last and of the best epoch (older ones are removed)
- ``lists.npz`` — the best epoch's top-``K`` lists, history excluded, for the valid and the test users
  (``valid_users``, ``valid_top`` (n, K), ``test_users``, ``test_top``; ``0`` pads a list shorter than ``K``)
- ``peer.json`` — the peer's settings and library versions
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

TOP_K = 100
SPLITS = ("valid", "test")


@dataclass
class Cases:
    users: np.ndarray  # (n,) int64
    histories: list[np.ndarray]  # each int64, time order
    targets: list[np.ndarray]


@dataclass
class Export:
    train: dict[str, np.ndarray]  # user, item, timestamp, position: sorted by user, then position
    cases: dict[str, Cases]
    n_items: int
    meta: dict[str, Any]


def split_flat(flat: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return [flat[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]


def load_export(work: Path) -> Export:
    data = work / "data"
    with np.load(data / "train.npz") as z:
        train = {k: z[k].astype(np.int64) for k in ("user", "item", "timestamp", "position")}
    with np.load(data / "cases.npz") as z:
        cases = {
            s: Cases(
                users=z[f"{s}_users"].astype(np.int64),
                histories=split_flat(z[f"{s}_hist_items"].astype(np.int64), z[f"{s}_hist_offsets"]),
                targets=split_flat(z[f"{s}_targets"].astype(np.int64), z[f"{s}_target_offsets"]),
            )
            for s in SPLITS
        }
        n_items = int(z["n_items"])
    meta = json.loads((data / "meta.json").read_text())
    return Export(train=train, cases=cases, n_items=n_items, meta=meta)


def top_k_from_scores(scores: np.ndarray, histories: Sequence[np.ndarray], k: int = TOP_K) -> np.ndarray:
    """Top-``k`` item indices per row of ``scores`` (B, n_items + 1; column 0 is padding), history excluded.

    Sorted best first; rows with fewer than ``k`` rankable items are padded with 0.
    """
    s = np.array(scores, dtype=np.float32, copy=True)
    s[:, 0] = -np.inf
    for i, h in enumerate(histories):
        if len(h):
            s[i, h] = -np.inf
    k = min(k, s.shape[1] - 1)
    part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(s, part, 1), axis=1, kind="stable")
    top = np.take_along_axis(part, order, 1).astype(np.int64)
    top[~np.isfinite(np.take_along_axis(s, top, 1))] = 0
    return top


def ndcg_at(top: np.ndarray, targets: Sequence[np.ndarray], k: int = 10) -> float:
    """Mean NDCG@k of top lists against one target per user (the first; leave-one-out has one)."""
    if len(targets) == 0:
        return 0.0
    gains = np.zeros(len(targets))
    for i, t in enumerate(targets):
        hit = np.flatnonzero(top[i, :k] == t[0])
        if hit.size:
            gains[i] = 1.0 / np.log2(hit[0] + 2.0)
    return float(gains.mean())


class Adapter(Protocol):
    """What a peer implements; the loop below does the rest."""

    def init(self) -> None: ...  # a fresh model (seeded)
    def train_epoch(self) -> None: ...  # one pass over the training data
    def top_k(self, cases: Cases, k: int) -> np.ndarray: ...  # (n, k) item indices, history excluded
    def save(self, path: Path) -> None: ...  # a checkpoint that ``load`` resumes from (model + optimizer)
    def load(self, path: Path) -> None: ...
    def describe(self) -> dict[str, Any]: ...  # settings and versions, for the results file


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--max-epochs", type=int, default=None)
    p.add_argument("--max-hours", type=float, default=None)
    p.add_argument("--patience", type=int, default=10)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--resume", action="store_true")
    return p.parse_args(argv)


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def _log(msg: str) -> None:
    print(f"[peer {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run_loop(make: Callable[[Export, argparse.Namespace], Adapter], argv: Sequence[str] | None = None) -> None:
    """Train epoch by epoch with early stopping on our validation targets, checkpointing each epoch."""
    args = parse_args(argv)
    out = args.work / "out"
    ckpts = out / "ckpt"
    progress_path = out / "progress.json"
    if not args.resume and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    export = load_export(args.work)
    adapter = make(export, args)
    state: dict[str, Any] = {"curve": [], "best_epoch": None, "best_ndcg": None, "last_ckpt": None}
    if args.resume and progress_path.is_file():
        state = json.loads(progress_path.read_text())
    valid = export.cases["valid"]
    if state.get("stop_reason") == "early_stopped":
        _log(f"already early-stopped at epoch {state['curve'][-1]['epoch']}; best epoch {state['best_epoch']}")
    else:
        state.pop("stop_reason", None)
        ready = False  # the model is loaded only when an epoch is to be trained: a run already at its cap just lists
        while True:
            done = len(state["curve"])
            spent = sum(c["train_s"] + c["eval_s"] for c in state["curve"])
            if args.max_epochs is not None and done >= args.max_epochs:
                state["stop_reason"] = "max_epochs"
                break
            if args.max_hours is not None and spent >= args.max_hours * 3600:
                state["stop_reason"] = "max_hours"
                break
            if state["best_epoch"] is not None and done - state["best_epoch"] >= args.patience:
                state["stop_reason"] = "early_stopped"
                break
            if not ready:
                if state["last_ckpt"]:
                    adapter.load(ckpts / state["last_ckpt"])
                    _log(f"resumed after epoch {done} from {state['last_ckpt']}")
                else:
                    adapter.init()
                ready = True
            epoch = done + 1
            t0 = time.perf_counter()
            adapter.train_epoch()
            t1 = time.perf_counter()
            ndcg = ndcg_at(adapter.top_k(valid, TOP_K), valid.targets, 10)
            t2 = time.perf_counter()
            state["curve"].append(
                {
                    "epoch": epoch,
                    "valid_ndcg@10": round(ndcg, 6),
                    "train_s": round(t1 - t0, 2),
                    "eval_s": round(t2 - t1, 2),
                    "pid": os.getpid(),  # which process ran it: a resumed run shows where it restarted
                    "commit": os.environ.get("RECENGINE_PEERS_COMMIT", "unknown"),  # the driver's checkout
                }
            )
            name = f"epoch-{epoch}"
            shutil.rmtree(ckpts / name, ignore_errors=True)  # left by a run stopped before it recorded this epoch
            (ckpts / name).mkdir(parents=True)
            adapter.save(ckpts / name)
            previous_best = state["best_epoch"]
            if state["best_ndcg"] is None or ndcg > state["best_ndcg"]:
                state["best_epoch"], state["best_ndcg"] = epoch, ndcg
            state["last_ckpt"] = name
            state["best_ckpt"] = f"epoch-{state['best_epoch']}"
            _write_json(progress_path, state)
            keep = {state["last_ckpt"], state["best_ckpt"]}
            for old in ckpts.iterdir():
                if old.name not in keep:
                    shutil.rmtree(old, ignore_errors=True)
            mark = " (best)" if state["best_epoch"] == epoch and previous_best != epoch else ""
            _log(f"epoch {epoch}: valid ndcg@10={ndcg:.5f} train {t1 - t0:.1f}s eval {t2 - t1:.1f}s{mark}")
    _write_json(progress_path, state)
    _log(f"stopped: {state['stop_reason']}; best epoch {state['best_epoch']} (valid ndcg@10 {state['best_ndcg']})")
    adapter.load(ckpts / state["best_ckpt"])
    lists = {}
    for s in SPLITS:
        lists[f"{s}_users"] = export.cases[s].users
        lists[f"{s}_top"] = adapter.top_k(export.cases[s], TOP_K)
    tmp = out / "lists.tmp.npz"
    np.savez_compressed(tmp, **lists)
    os.replace(tmp, out / "lists.npz")
    _write_json(out / "peer.json", adapter.describe())
