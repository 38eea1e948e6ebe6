"""RecBole 1.2.1's SASRec with the cross-entropy loss on the exported data set, in its own environment.

RecBole's own SASRec settings (``properties/model/SASRec.yaml`` and ``overall.yaml``): 2 layers, 2 heads, hidden
size 64, inner size 256, dropout 0.5 / 0.5, GELU, ``loss_type: CE`` over the whole catalogue (no negative
sampling), Adam lr 0.001, batch 2048, ``MAX_ITEM_LIST_LENGTH: 50``. The data go in as RecBole "benchmark" atomic
files, so RecBole trains on exactly our training split: ``peer.train.inter`` holds RecBole's usual sequential
augmentation of each user's training sequence (every prefix, cut to its last 50 items → the next item), and
``peer.valid.inter`` / ``peer.test.inter`` our cases (history → target), which RecBole only uses for its item
vocabulary. Training runs RecBole's ``Trainer._train_epoch`` one epoch at a time; ``peerlib.run_loop`` scores our
validation targets after each (``full_sort_predict`` over every item, history excluded) and stops early.
Checkpoints: the model's and the optimizer's ``state_dict`` and the random states. Imports the peer's library,
numpy and pandas only.
"""

from __future__ import annotations

import argparse
import logging
import random
import warnings
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peerlib import Cases, Export, run_loop, top_k_from_scores
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.data.interaction import Interaction
from recbole.model.sequential_recommender import SASRec
from recbole.trainer import Trainer
from recbole.utils import init_seed

# RecBole 1.2.1 predates pandas 2.2's and torch 2.4's deprecations; their warnings would bury the epoch log.
warnings.filterwarnings("ignore", category=FutureWarning)
MAX_LEN = 50
HEADER = "user_id:token\titem_id_list:token_seq\titem_id:token\n"


def write_atomic_files(export: Export, folder: Path) -> None:
    """RecBole benchmark files: ``peer.{train,valid,test}.inter`` (user, item list, next item)."""
    folder.mkdir(parents=True, exist_ok=True)
    user, item = export.train["user"], export.train["item"]
    bounds = np.flatnonzero(np.diff(user)) + 1
    with open(folder / "peer.train.inter", "w") as fh:
        fh.write(HEADER)
        for seq_users, seq in zip(np.split(user, bounds), np.split(item, bounds), strict=True):
            u = seq_users[0]
            for t in range(1, len(seq)):
                prefix = " ".join(map(str, seq[max(0, t - MAX_LEN) : t]))
                fh.write(f"{u}\t{prefix}\t{seq[t]}\n")
    for split in ("valid", "test"):
        cases = export.cases[split]
        with open(folder / f"peer.{split}.inter", "w") as fh:
            fh.write(HEADER)
            for u, h, t in zip(cases.users, cases.histories, cases.targets, strict=True):
                fh.write(f"{u}\t{' '.join(map(str, h[-MAX_LEN:]))}\t{t[0]}\n")


class RecBolePeer:
    def __init__(self, export: Export, args: argparse.Namespace) -> None:
        if args.threads:
            torch.set_num_threads(args.threads)
        self.n_items = export.n_items
        root = args.work / "recbole"
        if not (root / "peer" / "peer.train.inter").is_file():
            write_atomic_files(export, root / "peer")
        self.overrides: dict[str, Any] = {
            # The data: our split, as benchmark files (no RecBole-side splitting or filtering).
            "data_path": str(root),
            "benchmark_filename": ["train", "valid", "test"],
            "load_col": {"inter": ["user_id", "item_id_list", "item_id"]},
            "USER_ID_FIELD": "user_id",
            "ITEM_ID_FIELD": "item_id",
            "MAX_ITEM_LIST_LENGTH": MAX_LEN,
            "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
            # The model: RecBole's SASRec with the CE loss (its defaults, spelled out).
            "loss_type": "CE",
            "train_neg_sample_args": None,
            "n_layers": 2,
            "n_heads": 2,
            "hidden_size": 64,
            "inner_size": 256,
            "hidden_dropout_prob": 0.5,
            "attn_dropout_prob": 0.5,
            "learning_rate": 0.001,
            "train_batch_size": 2048,
            # Housekeeping.
            "seed": args.seed,
            "reproducibility": True,
            "show_progress": False,
            "save_dataset": False,
            "save_dataloaders": False,
            "checkpoint_dir": str(root / "saved"),
            "worker": 0,
        }
        self.config = Config(model="SASRec", dataset="peer", config_dict=self.overrides)
        logging.getLogger().setLevel(logging.WARNING)
        dataset = create_dataset(self.config)
        self.train_data, _, _ = data_preparation(self.config, dataset)
        tokens = dataset.field2id_token["item_id"]  # internal id → our item index as a string ([PAD] at 0)
        self.ours_of_internal = np.array([int(t) for t in tokens[1:]], dtype=np.int64)
        self.internal_of_ours = np.zeros(self.n_items + 1, dtype=np.int64)  # 0: unknown to RecBole
        self.internal_of_ours[self.ours_of_internal] = np.arange(1, len(tokens))
        self.device = self.config["device"]
        self.model: SASRec | None = None
        self.trainer: Trainer | None = None
        self.epoch = 0

    def _build(self) -> None:
        init_seed(self.config["seed"], self.config["reproducibility"])
        self.model = SASRec(self.config, self.train_data._dataset).to(self.device)
        self.trainer = Trainer(self.config, self.model)

    def init(self) -> None:
        self._build()
        self.epoch = 0

    def train_epoch(self) -> None:
        assert self.trainer is not None
        self.trainer._train_epoch(self.train_data, self.epoch, show_progress=False)
        self.epoch += 1

    @torch.no_grad()
    def top_k(self, cases: Cases, k: int, batch: int = 1024) -> np.ndarray:
        assert self.model is not None
        self.model.eval()
        out = []
        for start in range(0, len(cases.users), batch):
            hs = cases.histories[start : start + batch]
            seq = np.zeros((len(hs), MAX_LEN), dtype=np.int64)
            lens = np.ones(len(hs), dtype=np.int64)  # an all-padding row still needs a length of 1
            for i, h in enumerate(hs):
                known = self.internal_of_ours[h]
                known = known[known > 0][-MAX_LEN:]
                seq[i, : len(known)] = known
                lens[i] = max(1, len(known))
            fields = {self.model.ITEM_SEQ: torch.from_numpy(seq), self.model.ITEM_SEQ_LEN: torch.from_numpy(lens)}
            inter = Interaction(fields)
            scores = self.model.full_sort_predict(inter.to(self.device)).float().cpu().numpy()
            ours = np.full((len(hs), self.n_items + 1), -np.inf, dtype=np.float32)
            ours[:, self.ours_of_internal] = scores[:, 1:]
            out.append(top_k_from_scores(ours, hs, k))
        return np.concatenate(out) if out else np.zeros((0, k), dtype=np.int64)

    def save(self, path: Path) -> None:
        assert self.model is not None and self.trainer is not None
        state = {
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.trainer.optimizer.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
        }
        torch.save(state, path / "state.pt")

    def load(self, path: Path) -> None:
        self._build()
        assert self.model is not None and self.trainer is not None
        state = torch.load(path / "state.pt", weights_only=False)
        self.model.load_state_dict(state["model"])
        self.trainer.optimizer.load_state_dict(state["optimizer"])
        self.epoch = int(state["epoch"])
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])

    def describe(self) -> dict[str, Any]:
        keys = ["n_layers", "n_heads", "hidden_size", "inner_size", "hidden_dropout_prob", "attn_dropout_prob"]
        keys += ["hidden_act", "layer_norm_eps", "initializer_range", "loss_type", "learner", "learning_rate"]
        keys += ["train_batch_size", "weight_decay", "MAX_ITEM_LIST_LENGTH", "train_neg_sample_args"]
        return {
            "library": f"recbole {version('recbole')}",
            "torch": torch.__version__,
            "model": "SASRec, CE loss (RecBole's settings; epochs by early stopping on our validation)",
            "settings": {key: self.config[key] for key in keys},
            "train_samples": len(self.train_data._dataset),
        }


if __name__ == "__main__":
    run_loop(RecBolePeer)
