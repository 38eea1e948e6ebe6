"""Retraining from the service's own traffic: merge, re-split, challenge the champion, promote through a gate, refit.

    report = retrain(["ease"], settings, events="artifacts/events.sqlite3", catalogue=Path("items.csv"))
    report.dataset_dir              <datasets>/<version>: base data + events + items, split again by time
    report.outcomes[0].promoted     False: the champion keeps serving, and both figures say why

One run, under :func:`retrain_lock` (a file lock on the artifacts folder; with a Redis event stream, a Redis lock
with a time to live as well, so two schedulers on different machines never race either):

1. **merge** (:func:`next_dataset`) — the newest data set version (or ``data.dir`` the first time), the catalogue's
   items table and every logged event become a new data set version, split again leave-one-out on the merged
   timeline (``data/events.py``): no interaction later than a user's test item is a training row or in that
   user's test history. Only once the version is on disk and ``CURRENT`` names it does the log's watermark move,
   and only events under the watermark may the log trim: none is lost unmerged.
2. **challenge** — each engine's challenger is fitted on the new train split (``run.fit``: validation picks the
   epoch or λ); the champion (the engine's ``CURRENT`` artifact) and the challenger are scored on the same
   validation users of the new split (NDCG@10). The challenger is promoted only if its figure ≥ the champion's −
   ``training.promotion_tolerance``; a refusal leaves ``CURRENT`` alone.
3. **refit** — the promoted recipe is trained again on every interaction (``run.refit``), so the served model knows
   each user's newest items; its ``metrics.json`` keeps the held-out figures of selection (``valid_*``, ``test``,
   ``gate``) and says so under ``refit``. Then ``CURRENT`` moves, and every replica's poller loads it.

Training never imports serving: the champion is read from its artifact, and the lock talks to Redis itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import re
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recengine.data.dataset import CURRENT, TEST, VALID, Dataset, ItemCatalog, resolve_data_dir
from recengine.data.events import EventLogReader, Merge, RedisLogReader, merge_events, open_event_log, write_merged
from recengine.data.vocab import with_items
from recengine.engines import load_engine
from recengine.engines.artifact import current_dir, new_version, set_current, version_dir
from recengine.engines.base import Engine
from recengine.errors import ArtifactError, ConfigError, DataError, RetrainBusy
from recengine.evaluation import Scorer, evaluate
from recengine.observability.logging import get_logger
from recengine.settings import Settings, redact_url
from recengine.training import run

log = get_logger("recengine.retrain")

LOCK_FILE = ".retrain.lock"
GATE_METRIC = "ndcg@10"
"""The figure of the gate, on the validation split of the merged data set."""

FitFn = Callable[..., Engine]
"""``run.fit``'s signature: how a challenger is trained (tests pass a deliberately bad one)."""


# ---- outcomes -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    engine: str
    promoted: bool
    challenger: float
    """The challenger's validation NDCG@10 on the merged split."""
    champion: float | None
    """The champion's, on the same users; None when no champion was serving."""
    tolerance: float
    champion_version: str | None
    version: str | None = None
    """The new served version when promoted."""
    path: Path | None = None
    message: str = ""
    skipped: bool = False
    """Not judged at all: nothing in the merged data set is newer than what a refit champion has seen."""


@dataclass
class RetrainReport:
    dataset_dir: Path
    dataset: Dataset
    merged: dict[str, Any] | None
    """The data set's ``events_merged`` record when an event log was read."""
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def refused(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.promoted and not o.skipped]


# ---- scheduling -----------------------------------------------------------------------------------------------
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def parse_every(text: str) -> float:
    """``"90s"``, ``"30m"``, ``"6h"`` or ``"1d"`` as seconds; a :class:`ConfigError` naming the option otherwise."""
    found = _DURATION.match(text)
    if found is None:
        raise ConfigError(f"--every: expected a duration such as 30m, 6h or 1d, got {text!r}")
    seconds = float(found.group(1)) * _UNIT_S[found.group(2)]
    if seconds < 1:
        raise ConfigError(f"--every: {text!r} is shorter than a second")
    return seconds


# ---- the lock -------------------------------------------------------------------------------------------------
# Compare-and-delete / compare-and-extend: only the holder's token may release or renew the lock.
_RELEASE_LUA = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
_RENEW_LUA = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"


class RedisLock:
    """``SET key token NX PX ttl``, renewed every third of the ttl by a daemon thread while the run lives; a crashed
    run's lock expires on its own. :meth:`check` raises when the lock was lost (expired, or taken over)."""

    def __init__(self, client: Any, key: str, ttl_s: int) -> None:
        self.client = client
        self.key = key
        self.ttl_ms = int(ttl_s * 1000)
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
        self._stop = threading.Event()
        self._lost = False
        self._thread: threading.Thread | None = None

    def acquire(self) -> None:
        if not self.client.set(self.key, self.token, nx=True, px=self.ttl_ms):
            holder = self.client.get(self.key)
            holder = holder.decode() if isinstance(holder, bytes) else holder
            raise RetrainBusy(
                f"another recengine retrain holds the Redis lock {self.key} ({holder}); it expires "
                f"{max(0, int(self.client.pttl(self.key)) // 1000)} s after its holder stops renewing it"
            )
        self._thread = threading.Thread(target=self._renew, name="retrain-lock", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_ms / 3000):
            try:
                if not self.client.eval(_RENEW_LUA, 1, self.key, self.token, self.ttl_ms):
                    self._lost = True
                    return
            except Exception as exc:  # a blip: the next renewal may succeed before the ttl runs out
                log.warning("retrain lock renewal failed", key=self.key, error=str(exc))

    def check(self) -> None:
        if self._lost:
            raise RetrainBusy(f"the Redis lock {self.key} expired during this run; nothing promoted")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with contextlib.suppress(Exception):
            self.client.eval(_RELEASE_LUA, 1, self.key, self.token)


@dataclass
class Locks:
    redis: RedisLock | None = None

    def check(self) -> None:
        if self.redis is not None:
            self.redis.check()


@contextlib.contextmanager
def retrain_lock(artifacts_dir: Path, log_reader: EventLogReader | None = None, ttl_s: int = 600) -> Iterator[Locks]:
    """Exclusive right to retrain: an ``flock`` on ``<artifacts_dir>/.retrain.lock`` (released by the kernel when
    the process dies), and a Redis lock beside the stream when the events come from Redis. Raises
    :class:`RetrainBusy` at once, never waits."""
    artifacts_dir = Path(artifacts_dir)
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    path = artifacts_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            raise RetrainBusy(
                f"another recengine retrain is running on {artifacts_dir} (lock {path} held by {holder}); "
                "try again once it has finished"
            ) from None
        os.ftruncate(fd, 0)
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {since}\n".encode(), 0)
        locks = Locks()
        if isinstance(log_reader, RedisLogReader):
            locks.redis = RedisLock(log_reader.client, f"{log_reader.stream}:retrain-lock", ttl_s)
            locks.redis.acquire()
        try:
            yield locks
        finally:
            if locks.redis is not None:
                locks.redis.release()
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing the descriptor releases the flock


# ---- 1. the next data set ---------------------------------------------------------------------------------------
def datasets_root(settings: Settings) -> Path:
    return Path(settings.training.datasets_dir or Path(settings.serving.artifacts_dir) / "datasets")


def base_dataset(settings: Settings, data: Path | None = None) -> Path:
    """Where a run starts: ``data`` when given, else the newest version this folder of versions holds, else
    ``data.dir`` (the first run)."""
    if data is not None:
        return Path(data)
    root = datasets_root(settings)
    if (root / CURRENT).is_file():
        return resolve_data_dir(root)
    return Path(settings.data.dir)


def is_catalogue_store(spec: str | Path) -> bool:
    """A catalogue store (``redis://…`` or the catalogue's SQLite file), as opposed to an items table file."""
    text = str(spec)
    if text.startswith(("redis://", "rediss://", "unix://")):
        return True
    try:
        with open(text, "rb") as fh:
            return fh.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


def load_catalogue(spec: str | Path, on_invalid: str = "fail") -> Any:
    """The catalogue's items table (``item``, ``title``, ``categories``, numeric columns): exported from the
    catalogue store that the items API writes (its SQLite file or ``redis://…?prefix=``), or read from an items file
    in any format ``recengine data prepare --items`` reads. Items marked unavailable stay in the table: their
    interactions remain training data, and serving never recommends them."""
    if is_catalogue_store(spec):
        from recengine.catalogue.export import export_catalogue

        return export_catalogue(spec).items
    from recengine.data.readers import read_items

    table, _ = read_items(Path(spec), on_invalid=on_invalid)
    return table


def next_dataset(
    base: Dataset, root: Path, log_reader: EventLogReader | None, catalogue: str | Path | None, keep: int = 3
) -> tuple[Path, Dataset, dict[str, Any] | None]:
    """Write ``base`` + the catalogue + the log's events as a new version under ``root``, move ``root/CURRENT`` to
    it, and only then the log's watermark. Old versions beyond the newest ``keep`` are removed."""
    dataset = base
    if catalogue is not None:
        dataset = with_items(dataset, load_catalogue(catalogue))
    merge = Merge(dataset, "", 0, []) if log_reader is None else merge_events(dataset, log_reader, grow=True)
    merge.dataset.manifest["retrain"] = {
        "base": str(base.path) if base.path is not None else None,
        "base_hash": base.content_hash,
        "catalogue": redact_url(str(catalogue)) if catalogue is not None else None,
    }
    target = write_merged(merge, Path(root) / new_version())
    set_current(target)
    merged = merge.dataset.manifest.get("events_merged") if log_reader is not None else None
    if log_reader is not None:
        # The data set holding these events is on disk and named by CURRENT: only now may the log trim them.
        log_reader.mark_merged(merge.up_to)
    _prune(Path(root), keep, target)
    return target, merge.dataset, merged


def _prune(root: Path, keep: int, current: Path) -> None:
    versions = sorted(p for p in root.iterdir() if p.is_dir() and (p / "manifest.json").is_file())
    for old in versions[:-keep]:
        if old != current:
            shutil.rmtree(old, ignore_errors=True)


# ---- 2. the gate ------------------------------------------------------------------------------------------------
def aligned_scorer(engine: Engine, items: ItemCatalog) -> Scorer:
    """``engine``'s scores in the index space of ``items``: histories translated into the engine's own vocabulary
    (items it does not know are dropped), and items it does not know scored -inf (it cannot recommend them)."""
    to_own = np.concatenate([[0], engine.item_ids.encode(items.ids.ids[1:])]).astype(np.int64)
    columns = torch.from_numpy(to_own)
    unknown = columns == 0

    def score(histories: Sequence[np.ndarray]) -> torch.Tensor:
        own = []
        for h in histories:
            mapped = to_own[np.asarray(h, dtype=np.int64).clip(0, len(to_own) - 1)]
            own.append(mapped[mapped > 0])
        scores = torch.as_tensor(engine.score(own))[:, columns].clone()
        scores[:, unknown] = -torch.inf
        return scores

    return score


def gate_view(dataset: Dataset, champion: Engine | None) -> Dataset:
    """The data set the gate scores both models on: ``dataset``, less the validation targets a refit champion has
    already trained on (a refit trains on every interaction up to its data set's newest timestamp, so an older
    validation item would be a question it had seen the answer to). Those users' validation rows are relabelled as
    test rows, which the validation never reads; histories are unchanged."""
    seen_up_to = ((champion.config.get("refit") or {}) if champion is not None else {}).get("newest_timestamp")
    if seen_up_to is None:
        return dataset
    split = dataset.split.copy()
    split[(split == VALID) & (dataset.timestamp <= int(seen_up_to))] = TEST
    return replace(dataset, split=split, manifest={**dataset.manifest, "content_hash": None})


def valid_figure(scorer: Scorer, dataset: Dataset, max_users: int | None) -> tuple[float, int]:
    """Validation NDCG@10 of ``scorer`` and the number of users it was averaged over (0: nothing to judge on)."""
    result = evaluate(scorer, dataset, split="valid", ks=(10,), max_users=max_users)
    return float(result[GATE_METRIC]), int(result["n_users"])


def load_champion(artifacts_dir: Path, engine: str) -> tuple[Engine | None, str | None]:
    """The engine's served artifact, or None (no CURRENT, or an artifact that no longer loads: nothing to beat)."""
    path = current_dir(artifacts_dir, engine)
    if path is None:
        return None, None
    try:
        champion = load_engine(path)
    except ArtifactError as exc:
        log.warning("champion does not load; the challenger has nothing to beat", engine=engine, error=str(exc))
        return None, None
    return champion, champion.version


def challenge(
    engine: str,
    dataset: Dataset,
    settings: Settings,
    locks: Locks | None = None,
    fit_fn: FitFn | None = None,
) -> Outcome:
    """Fit the challenger, gate it against the champion on the same split, and on success refit and promote it."""
    artifacts = Path(settings.serving.artifacts_dir)
    training = settings.training
    section = getattr(settings.engines, engine)
    tolerance = float(training.promotion_tolerance)
    champion, champion_version = load_champion(artifacts, engine)
    judged = gate_view(dataset, champion)
    if not (judged.split == VALID).any():
        if judged is dataset:
            raise DataError(f"{dataset.path}: no user has a validation interaction: there is nothing to gate on")
        message = (
            f"{engine}: skipped: no validation interaction is newer than what champion {champion_version} was "
            "trained on (no new events since it was refit); the champion keeps serving"
        )
        log.info("retrain skipped", engine=engine, champion_version=champion_version, reason="no new interactions")
        return Outcome(engine, False, math.nan, None, tolerance, champion_version, message=message, skipped=True)
    challenger = (fit_fn or run.fit)(engine, dataset, section, training, artifacts)
    challenger_figure, n_judged = valid_figure(challenger.score, judged, training.valid_users)
    champion_figure = None
    if champion is not None:
        champion_figure, _ = valid_figure(aligned_scorer(champion, dataset.items), judged, training.valid_users)
    if champion_figure is not None and challenger_figure < champion_figure - tolerance:
        message = (
            f"{engine}: challenger refused: validation NDCG@10 {challenger_figure:.4f} < champion "
            f"{champion_version} {champion_figure:.4f} − tolerance {tolerance:g}; the champion keeps serving"
        )
        log.warning(
            "retrain refused",
            engine=engine,
            challenger=challenger_figure,
            champion=champion_figure,
            champion_version=champion_version,
            tolerance=tolerance,
        )
        return Outcome(engine, False, challenger_figure, champion_figure, tolerance, champion_version, message=message)
    test = evaluate(challenger.score, dataset, split="test", ks=run.TEST_KS)
    served = run.refit(engine, dataset, section, training, artifacts, challenger)
    served.metrics["test"] = test
    served.metrics["gate"] = {
        "metric": f"valid/{GATE_METRIC}",
        "challenger": challenger_figure,
        "champion": champion_figure,
        "champion_version": champion_version,
        "tolerance": tolerance,
        "n_users": n_judged,
        "dataset_hash": dataset.content_hash,
    }
    target = version_dir(artifacts, engine)
    served.config["version"] = target.name
    served.save(target)
    if locks is not None:
        locks.check()  # a run that lost its lock must not move CURRENT under another one's feet
    set_current(target)
    versus = "no champion" if champion_figure is None else f"champion {champion_version} {champion_figure:.4f}"
    message = (
        f"{engine}: promoted {target.name}: validation NDCG@10 {challenger_figure:.4f} vs {versus} "
        f"(tolerance {tolerance:g}); refit on all {dataset.n_interactions} interactions"
    )
    log.info(
        "retrain promoted",
        engine=engine,
        version=target.name,
        challenger=challenger_figure,
        champion=champion_figure,
        champion_version=champion_version,
        tolerance=tolerance,
    )
    return Outcome(
        engine,
        True,
        challenger_figure,
        champion_figure,
        tolerance,
        champion_version,
        version=target.name,
        path=target,
        message=message,
    )


# ---- the run ----------------------------------------------------------------------------------------------------
def retrain(
    engines: Sequence[str],
    settings: Settings,
    *,
    events: str | Path | None = None,
    catalogue: str | Path | None = None,
    data: Path | None = None,
    fit_fn: FitFn | None = None,
) -> RetrainReport:
    """One retraining run for ``engines`` (see the module docstring); the report says what was promoted."""
    if not engines:
        raise ConfigError("retrain: no engine to retrain (pass --engine NAME or --all)")
    training = settings.training
    if "ddp" in training.strategy or training.num_nodes > 1:
        raise ConfigError(
            "retrain runs in one process (it holds the locks and moves CURRENT itself): set training.strategy = "
            "'auto' and training.num_nodes = 1, or train distributed with `recengine train` (docs/training.md)"
        )
    if catalogue is not None and not is_catalogue_store(catalogue) and not Path(catalogue).exists():
        raise DataError(f"--catalogue: {catalogue} not found")
    artifacts = Path(settings.serving.artifacts_dir)
    reader = open_event_log(events) if events is not None else None
    try:
        with retrain_lock(artifacts, reader, settings.training.retrain_lock_ttl_s) as locks:
            base = Dataset.load(base_dataset(settings, data))
            target, dataset, merged = next_dataset(
                base, datasets_root(settings), reader, catalogue, settings.training.keep_datasets
            )
            report = RetrainReport(target, dataset, merged)
            for engine in engines:
                report.outcomes.append(challenge(engine, dataset, settings, locks, fit_fn))
    finally:
        if reader is not None:
            reader.close()
    return report


def run_every(
    interval_s: float,
    once: Callable[[], Any],
    *,
    sleep: Callable[[float], None] = time.sleep,
    rounds: int | None = None,
) -> None:
    """Call ``once`` now and then every ``interval_s`` seconds (measured start to start); a failed round is logged and
    the next one runs on time. ``rounds`` bounds the loop (tests); None runs until interrupted."""
    done = 0
    while rounds is None or done < rounds:
        started = time.monotonic()
        try:
            once()
        except Exception as exc:  # one bad round (Redis away, a refused artifact) must not end the schedule
            log.error("retrain round failed", error=str(exc), error_type=type(exc).__name__)
        done += 1
        if rounds is not None and done >= rounds:
            return
        sleep(max(0.0, interval_s - (time.monotonic() - started)))
