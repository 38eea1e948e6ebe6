"""One exception tree for the whole package.

    RecengineError
    ├── ConfigError            a setting is missing, malformed or out of range
    ├── DataError              input data cannot be read or fails validation
    │   └── ValidationFailed   rows were rejected under the "fail" policy
    ├── ArtifactError          a model directory is missing a file, has a wrong shape or an unknown engine
    ├── TrainingDiverged       validation scores are NaN or infinite: the model is never saved or promoted
    ├── RetrainBusy            another ``recengine retrain`` holds the retraining lock
    ├── EngineError            an engine cannot answer this request
    │   ├── EngineUnavailable  disabled, not loaded, circuit open or out of time
    │   ├── NoHistory          a sequence engine was asked with an empty history
    │   └── CatalogueTooLarge  the engine refuses a catalogue beyond its memory budget
    ├── NotFound               an item / engine / model version that does not exist
    ├── EventRejected          an event fails validation and was not stored
    └── StorageUnavailable     the event log cannot take a write now (nothing stored; retry)
        └── EventLogFull       too many events wait to be merged into a data set (backpressure; retry later)

Services raise these; only ``api/problems.py`` maps them to HTTP and only ``cli.py`` to exit codes.
"""

from __future__ import annotations


class RecengineError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(RecengineError):
    """A setting is missing, malformed or outside its allowed range."""


class DataError(RecengineError):
    """Input data cannot be read, or does not have the expected shape."""


class ValidationFailed(DataError):
    """Rows were rejected and the policy says to fail rather than drop them."""

    def __init__(self, message: str, report: object | None = None) -> None:
        super().__init__(message)
        self.report = report


class ArtifactError(RecengineError):
    """A model artifact directory cannot be loaded."""


class TrainingDiverged(RecengineError):
    """Training produced non-finite scores (NaN or inf) on the validation split; nothing was saved."""


class RetrainBusy(RecengineError):
    """Another retraining run holds the lock (of the artifacts folder, or of the Redis event stream)."""


class EngineError(RecengineError):
    """An engine cannot answer this request."""


class EngineUnavailable(EngineError):
    """The engine is disabled, not loaded, its circuit is open or it ran out of time."""


class NoHistory(EngineError):
    """A sequence engine needs at least one known item in the history."""


class CatalogueTooLarge(EngineError):
    """The engine refuses to fit a catalogue that would not fit its memory budget."""


class NotFound(RecengineError):
    """An item, engine or model version that does not exist."""


class EventRejected(RecengineError):
    """An incoming event failed validation and was not stored."""


class StorageUnavailable(RecengineError):
    """A durable store (the event log) cannot take a write now; nothing was stored, a retry is safe."""

    retry_after_s: int = 1


class EventLogFull(StorageUnavailable):
    """The event log holds ``limit`` events not yet merged into a data set: appends wait for the next merge
    (``recengine data merge-events``) rather than anything being evicted. Nothing of the batch was stored."""

    # A merge takes minutes: retrying within a second only adds load.
    retry_after_s = 30

    def __init__(self, unmerged: int, limit: int, batch: int) -> None:
        super().__init__(
            f"event log full: {unmerged} events are not yet merged into a data set and {batch} more would pass "
            f"serving.max_unmerged_events = {limit}; nothing stored, retry later "
            "(operators: recengine data merge-events)"
        )
        self.unmerged = unmerged
        self.limit = limit
        self.batch = batch
