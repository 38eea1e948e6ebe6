"""A stand-in peer for the smoke tests: popularity lists, with a validation curve that rises, peaks and falls.

At epoch ``e`` the scores are training counts plus noise of scale ``|e - peak| × max count`` (seeded by the seed and
the epoch), so epoch ``peak`` (``FAKE_PEER_PEAK``, default 3) is plain popularity and the best on validation, and
early stopping has something to stop on. ``FAKE_PEER_CRASH_AFTER=N`` makes the process exit with status 3 right after
epoch ``N``'s checkpoint and progress are written, as an interrupted run would, so ``--resume`` can be tested.
``FAKE_PEER_SLEEP`` adds seconds per epoch. Needs numpy only (it runs with any interpreter that has numpy).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from peerlib import Cases, Export, run_loop, top_k_from_scores


class FakePeer:
    def __init__(self, export: Export, args: argparse.Namespace) -> None:
        self.counts = np.bincount(export.train["item"], minlength=export.n_items + 1).astype(np.float32)
        self.seed = args.seed
        self.peak = int(os.environ.get("FAKE_PEER_PEAK", "3"))
        self.crash_after = int(os.environ.get("FAKE_PEER_CRASH_AFTER", "0"))
        self.sleep = float(os.environ.get("FAKE_PEER_SLEEP", "0"))
        self.epoch = 0

    def init(self) -> None:
        self.epoch = 0

    def train_epoch(self) -> None:
        if self.crash_after and self.epoch == self.crash_after:
            # Epoch ``crash_after`` is fully recorded (the loop writes progress before the next epoch starts).
            os._exit(3)
        if self.sleep:
            import time

            time.sleep(self.sleep)
        self.epoch += 1

    def top_k(self, cases: Cases, k: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch])
        noise = rng.standard_normal((len(cases.users), len(self.counts))).astype(np.float32)
        scale = abs(self.epoch - self.peak) * float(self.counts.max())
        scores = self.counts[None, :] + scale * noise
        return top_k_from_scores(scores, cases.histories, k)

    def save(self, path: Path) -> None:
        (path / "state.json").write_text(json.dumps({"epoch": self.epoch}))

    def load(self, path: Path) -> None:
        self.epoch = json.loads((path / "state.json").read_text())["epoch"]

    def describe(self) -> dict[str, Any]:
        return {"library": "fake (popularity + scheduled noise)", "peak": self.peak}


if __name__ == "__main__":
    run_loop(FakePeer)
