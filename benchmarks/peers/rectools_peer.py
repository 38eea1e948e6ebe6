"""RecTools' ``SASRecModel`` (rectools 0.19, Lightning) on the exported data set, in its own environment.

The model keeps RecTools' documented defaults (2 blocks, 4 heads, 256 factors, dropout 0.2, session_max_len 100,
softmax loss over the whole catalogue, lr 0.001, batch 128, train_min_user_interactions 2); only ``epochs`` is
ours: training goes one epoch at a time through ``fit_partial`` (which keeps the optimizer and the trainer state
between calls), and ``peerlib.run_loop`` stops on our validation NDCG@10. Recommendations come from
``model.recommend(..., filter_viewed=True)`` over a RecTools ``Dataset`` of each case's history, so the history
is excluded by RecTools itself. Checkpoints are Lightning's own (``fit_trainer.save_checkpoint``: weights,
optimizer, epoch counter), restored with ``SASRecModel.load_from_checkpoint``. Imports the peer's library, numpy
and pandas only.
"""

from __future__ import annotations

import argparse
import json
import random
import warnings
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from peerlib import Cases, Export, run_loop
from pytorch_lightning import seed_everything
from rectools import Columns
from rectools.dataset import Dataset
from rectools.models import SASRecModel


def interactions(users: np.ndarray, histories: list[np.ndarray]) -> pd.DataFrame:
    """One row per history item; the datetime is the item's place in its history (time order, no ties)."""
    lengths = np.array([len(h) for h in histories], dtype=np.int64)
    pos = np.concatenate([np.arange(n) for n in lengths]) if len(lengths) else np.zeros(0, np.int64)
    return pd.DataFrame(
        {
            Columns.User: np.repeat(users, lengths),
            Columns.Item: np.concatenate(histories) if histories else np.zeros(0, np.int64),
            Columns.Weight: 1.0,
            Columns.Datetime: pd.to_datetime(pos, unit="s"),
        }
    )


class RecToolsPeer:
    def __init__(self, export: Export, args: argparse.Namespace) -> None:
        self.seed = args.seed
        if args.threads:
            torch.set_num_threads(args.threads)
        train = export.train
        df = pd.DataFrame(
            {
                Columns.User: train["user"],
                Columns.Item: train["item"],
                Columns.Weight: 1.0,
                Columns.Datetime: pd.to_datetime(train["position"], unit="s"),
            }
        )
        self.dataset = Dataset.construct(df)
        self.model: SASRecModel | None = None
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")

    def _new_model(self) -> SASRecModel:
        return SASRecModel()  # the documented defaults; epochs are driven one at a time below

    def init(self) -> None:
        seed_everything(self.seed, workers=True)
        self.model = self._new_model()

    def train_epoch(self) -> None:
        assert self.model is not None
        self.model.fit_partial(self.dataset, min_epochs=1, max_epochs=1)

    def top_k(self, cases: Cases, k: int) -> np.ndarray:
        assert self.model is not None
        ds = Dataset.construct(interactions(cases.users, cases.histories))
        reco = self.model.recommend(
            users=cases.users, dataset=ds, k=k, filter_viewed=True, on_unsupported_targets="warn"
        )
        top = np.zeros((len(cases.users), k), dtype=np.int64)
        row_of = {int(u): i for i, u in enumerate(cases.users)}
        rows = reco[Columns.User].map(row_of).to_numpy()
        cols = reco[Columns.Rank].to_numpy().astype(np.int64) - 1
        top[rows, cols] = reco[Columns.Item].to_numpy().astype(np.int64)
        return top

    def save(self, path: Path) -> None:
        assert self.model is not None and self.model.fit_trainer is not None
        self.model.fit_trainer.save_checkpoint(str(path / "model.ckpt"))
        torch.save(
            {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
            path / "rng.pt",
        )

    def load(self, path: Path) -> None:
        self.model = SASRecModel.load_from_checkpoint(path / "model.ckpt")
        rng = torch.load(path / "rng.pt", weights_only=False)
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])

    def describe(self) -> dict[str, Any]:
        config = self._new_model().get_config(simple_types=True)
        keep = ["n_blocks", "n_heads", "n_factors", "dropout_rate", "session_max_len", "train_min_user_interactions"]
        keep += ["loss", "n_negatives", "lr", "batch_size", "use_pos_emb", "use_causal_attn", "use_key_padding_mask"]
        return {
            "library": f"rectools {version('rectools')}",
            "torch": torch.__version__,
            "pytorch_lightning": version("pytorch_lightning"),
            "model": "SASRecModel (documented defaults; epochs by early stopping on our validation)",
            "settings": {k: config[k] for k in keep if k in config},
            "config": json.loads(json.dumps(config, default=str)),
        }


if __name__ == "__main__":
    run_loop(RecToolsPeer)
