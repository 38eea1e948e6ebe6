"""Prometheus metrics for the whole service, behind a handful of plain functions.

Callers never touch ``prometheus_client`` objects; they call one of these (all cheap, thread-safe, never
raising on I/O — only on a programming error such as an unknown outcome name, which the tests catch):

- ``observe_request(route, engine, status, seconds)``: one HTTP request → ``recengine_requests_total`` and
  ``recengine_request_duration_seconds`` by route, engine and status;
- ``observe_inference(engine, seconds, outcome)``: one engine call (``ok`` / ``error`` / ``timeout``) →
  ``recengine_engine_inference_seconds``;
- ``record_cache(backend, outcome)``: ``hit`` / ``miss`` / ``error`` for ``memory`` or ``redis``; ``error`` is a
  lookup that Redis did not answer (it failed, or it is marked down after a failure and was not asked), which the
  in-process cache then answered — counted again there as a ``memory`` hit or miss;
- ``record_fallback(engine, reason)``: a request not answered by its first-choice engine;
- ``set_circuit_state(engine, state)``: ``closed`` (0) / ``half_open`` (1) / ``open`` (2);
- ``set_model(engine, version, created_ts)``: the loaded model → info series + creation time (→ age);
- ``record_events(accepted, rejected, refused)``: events taken in by ``POST /api/v1/events`` (and the time of
  the last accepted one, which the no-events alert watches); ``refused``: valid events turned away because the
  log is full (backpressure, 503);
- ``set_store_sizes(history=…, events=…)``: users with a live history and event-log rows (the gateway's upkeep
  publishes them every ``serving.reload_poll_s``);
- ``set_event_log_backlog(unmerged, limit)``: events not yet merged into a data set, and the cap on them;
- ``set_dependency_up(name, up)``: reachability of a backing service (``redis``);
- ``set_catalogue_size(records, available)``: items written through the catalogue API, by availability;
- ``record_impression(engine, arm)`` / ``record_attributed(engine, arm)``: an answer recorded as an impression, an
  event credited to one (``arm`` ``none`` outside an experiment); ``set_experiment_arms(experiment)``: which arm
  is the control (``recengine_experiment_control``), for the CTR alert;
- ``metrics_response() -> (body, content_type)``: the ``/metrics`` payload, single- or multi-process;
- ``prepare_multiprocess_dir()`` / ``mark_worker_exit()``: multi-worker set-up and worker shutdown.

Label conventions (keep cardinality bounded — never put a user id, item id or raw path in a label):

- ``route`` is the route *template* (``/api/v1/items/{item_id}/similar``), not the concrete path; unmatched
  paths use ``"unmatched"``.
- ``engine`` is the engine that answered (``popularity``, ``ease``, ``transformer``, ``neural``) or
  ``"none"`` for routes that do not run an engine. ``status`` is the numeric HTTP status as a string.
- ``record_fallback(engine, reason)`` is called **once per request** that was answered by a fallback, with
  the engine that was chosen first and why it was passed over (``error``, ``timeout``, ``circuit_open``,
  ``disabled``, ``not_loaded``, ``no_history``…); so ``rate(recengine_fallbacks_total) /
  rate(recengine_requests_total)`` is the fallback rate the alert watches.

Multi-worker mode (``uvicorn --workers N`` or ``recengine serve --workers N``): ``prometheus_client`` picks
its storage when it is first imported, so ``PROMETHEUS_MULTIPROC_DIR`` must be set *before* any worker
starts. ``serve`` calls :func:`prepare_multiprocess_dir` in the parent process before handing over to
uvicorn: it creates (or empties) the directory and exports the variable, which the spawned workers inherit.
Each worker then writes its samples to memory-mapped files there, and :func:`metrics_response` merges them
with ``MultiProcessCollector`` whichever worker answers the scrape: counters and histograms are summed;
gauges use the mode noted beside each (``livemax`` / ``livemin`` only count workers still alive — a worker
calls :func:`mark_worker_exit` in its shutdown hook). The model "info" is a gauge set to 1 rather than a
``prometheus_client.Info``, because ``Info`` is not aggregated across processes. The model age is derived at
scrape time from the creation timestamp, so it never goes stale.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

if TYPE_CHECKING:
    from recengine.settings import ExperimentSettings

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
# prometheus_client opens this process's files as soon as an unlabelled metric is built (below), so a configured
# directory must exist by then, even in a parent that calls prepare_multiprocess_dir() right after importing us.
if os.environ.get(MULTIPROC_ENV):
    Path(os.environ[MULTIPROC_ENV]).mkdir(parents=True, exist_ok=True)

# Dense below the 100 ms SLO so p50/p95/p99 are resolved to a few ms; a few coarse buckets above it show how
# bad a breach is. 16 buckets × (route, engine, status) stays a modest number of series.
LATENCY_BUCKETS: Final[tuple[float, ...]] = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip

CacheOutcome = Literal["hit", "miss", "error"]
InferenceOutcome = Literal["ok", "error", "timeout"]
CircuitState = Literal["closed", "half_open", "open"]
CACHE_OUTCOMES: Final = frozenset({"hit", "miss", "error"})
INFERENCE_OUTCOMES: Final = frozenset({"ok", "error", "timeout"})
CIRCUIT_STATES: Final[dict[str, int]] = {"closed": 0, "half_open": 1, "half-open": 1, "open": 2}

REQUESTS = Counter(
    "recengine_requests_total",
    "HTTP requests answered, by route template, answering engine and status code.",
    ["route", "engine", "status"],
)
REQUEST_SECONDS = Histogram(
    "recengine_request_duration_seconds",
    "Time from request received to response sent, by route template, answering engine and status code.",
    ["route", "engine", "status"],
    buckets=LATENCY_BUCKETS,
)
INFERENCE_SECONDS = Histogram(
    "recengine_engine_inference_seconds",
    "Time one engine spent scoring a request (excludes cache, routing and serialisation), by how the call ended "
    "(ok, error, timeout).",
    ["engine", "outcome"],
    buckets=LATENCY_BUCKETS,
)
CACHE = Counter(
    "recengine_cache_lookups_total",
    "Cache lookups by backend (memory, redis) and outcome (hit, miss; error: Redis did not answer, the lookup went "
    "to memory).",
    ["backend", "outcome"],
)
FALLBACKS = Counter(
    "recengine_fallbacks_total",
    "Requests answered by a fallback, by the engine chosen first and the reason it was passed over.",
    ["engine", "reason"],
)
# The worst state among live workers: one worker with an open circuit is worth seeing.
CIRCUIT = Gauge(
    "recengine_circuit_state",
    "Circuit breaker per engine: 0 closed, 1 half-open, 2 open.",
    ["engine"],
    multiprocess_mode="livemax",
)
MODEL_INFO = Gauge(
    "recengine_model_info",
    "1 for each (engine, model version) loaded by some live worker; 0 for a version since replaced.",
    ["engine", "version"],
    multiprocess_mode="livemax",
)
# The oldest model still served by a live worker is the one the staleness alert must see.
MODEL_CREATED = Gauge(
    "recengine_model_created_timestamp_seconds",
    "Unix time at which the loaded model version was trained.",
    ["engine"],
    multiprocess_mode="livemin",
)
EVENTS = Counter(
    "recengine_events_total",
    "Events taken in by POST /api/v1/events, by outcome (accepted, rejected, refused: the log is full).",
    ["outcome"],
)
# "max" without "live": an event accepted by a worker that has since exited still counts. It starts at the
# process start, so the no-events alert also fires for a service that never received one.
LAST_EVENT = Gauge(
    "recengine_events_last_accepted_timestamp_seconds",
    "Unix time of the last accepted event (or of the process start, before the first one).",
    multiprocess_mode="max",
)
LAST_EVENT.set(time.time())
# History and event log are shared stores (Redis, SQLite) in a multi-worker deployment: every worker sees
# the same size, so the maximum is the size (summing would count it N times).
HISTORY_SIZE = Gauge(
    "recengine_history_store_size",
    "Users with a live history (items from events since the data set) in the history store; with Redis a counter "
    "the store keeps, an estimate.",
    multiprocess_mode="livemax",
)
EVENT_LOG_SIZE = Gauge(
    "recengine_event_log_size",
    "Events stored in the durable event log.",
    multiprocess_mode="livemax",
)
# Shared log, same value in every worker (as above). The limit is +Inf when no cap is set.
EVENT_LOG_UNMERGED = Gauge(
    "recengine_event_log_unmerged",
    "Events in the event log not yet merged into a data set (recengine data merge-events).",
    multiprocess_mode="livemax",
)
EVENT_LOG_UNMERGED_LIMIT = Gauge(
    "recengine_event_log_unmerged_limit",
    "serving.max_unmerged_events: past it, POST /api/v1/events is refused with a 503.",
    multiprocess_mode="livemax",
)
# Any live worker that cannot reach the dependency makes it count as down.
DEPENDENCY_UP = Gauge(
    "recengine_dependency_up",
    "1 when a backing service (redis) answered its last call, 0 when it did not.",
    ["dependency"],
    multiprocess_mode="livemin",
)
# The catalogue is shared (SQLite file, Redis): every worker sees the same records, so the maximum is the size.
CATALOGUE_ITEMS = Gauge(
    "recengine_catalogue_items",
    "Items written through the catalogue API (PUT /api/v1/items), by state (available, unavailable).",
    ["state"],
    multiprocess_mode="livemax",
)
IMPRESSIONS = Counter(
    "recengine_impressions_total",
    "Answers recorded as impressions, by answering engine (interleave for an interleaved answer) and experiment arm "
    "(none outside an experiment).",
    ["engine", "arm"],
)
ATTRIBUTED = Counter(
    "recengine_attributed_events_total",
    "Events credited to an answer shown to the user, by credited engine and experiment arm (none outside one).",
    ["engine", "arm"],
)
# The control is configuration, the same in every worker: the alert compares each arm's CTR with its.
EXPERIMENT_CONTROL = Gauge(
    "recengine_experiment_control",
    "1 for the control arm of the running split experiment (the first of routing.experiment.weights), 0 for its "
    "other arms and for arms no longer in it.",
    ["arm"],
    multiprocess_mode="livemax",
)
MODEL_AGE_NAME: Final = "recengine_model_age_seconds"

# Every metric name this module can expose; the dashboard and alert tests check their PromQL against it.
METRIC_NAMES: Final[frozenset[str]] = frozenset(
    {
        "recengine_requests_total",
        "recengine_request_duration_seconds",
        "recengine_engine_inference_seconds",
        "recengine_cache_lookups_total",
        "recengine_fallbacks_total",
        "recengine_circuit_state",
        "recengine_model_info",
        "recengine_model_created_timestamp_seconds",
        MODEL_AGE_NAME,
        "recengine_events_total",
        "recengine_events_last_accepted_timestamp_seconds",
        "recengine_history_store_size",
        "recengine_event_log_size",
        "recengine_event_log_unmerged",
        "recengine_event_log_unmerged_limit",
        "recengine_dependency_up",
        "recengine_catalogue_items",
        "recengine_impressions_total",
        "recengine_attributed_events_total",
        "recengine_experiment_control",
    }
)

_versions: dict[str, str] = {}
_versions_lock = threading.Lock()


def _engine_label(engine: str | None) -> str:
    return engine or "none"


def observe_request(route: str, engine: str | None, status: int | str, seconds: float) -> None:
    """Count one answered HTTP request and its latency (``engine=None`` for routes that run no engine)."""
    labels = (route, _engine_label(engine), str(status))
    REQUESTS.labels(*labels).inc()
    REQUEST_SECONDS.labels(*labels).observe(seconds)


def observe_inference(engine: str, seconds: float, outcome: InferenceOutcome) -> None:
    """Record the time one engine call took and how it ended: ``ok``, ``error`` or ``timeout``."""
    if outcome not in INFERENCE_OUTCOMES:
        raise ValueError(f"inference outcome {outcome!r}: expected one of {sorted(INFERENCE_OUTCOMES)}")
    INFERENCE_SECONDS.labels(engine, outcome).observe(seconds)


def record_cache(backend: str, outcome: CacheOutcome) -> None:
    """Count a cache lookup: ``hit``, ``miss`` or ``error`` (Redis failed, or is marked down and was not asked)."""
    if outcome not in CACHE_OUTCOMES:
        raise ValueError(f"cache outcome {outcome!r}: expected one of {sorted(CACHE_OUTCOMES)}")
    CACHE.labels(backend, outcome).inc()


def record_fallback(engine: str, reason: str) -> None:
    """Count a request whose first-choice ``engine`` was passed over for ``reason`` (once per request)."""
    FALLBACKS.labels(engine, reason).inc()


def set_circuit_state(engine: str, state: CircuitState | str) -> None:
    """Publish an engine's circuit breaker state: ``closed``, ``half_open`` (or ``half-open``) or ``open``."""
    try:
        value = CIRCUIT_STATES[state]
    except KeyError:
        raise ValueError(f"circuit state {state!r}: expected closed, half_open or open") from None
    CIRCUIT.labels(engine).set(value)


def set_model(engine: str, version: str, created_ts: float | None = None) -> None:
    """Publish the model version an engine now serves; ``created_ts`` (Unix seconds) drives the age alert.

    The previous version's info series drops to 0 (multi-process storage cannot delete a series; in one
    process it is removed), so ``recengine_model_info == 1`` lists exactly what is being served.
    """
    multi = multiprocess_enabled()
    with _versions_lock:
        previous = _versions.get(engine)
        _versions[engine] = version
        if previous is not None and previous != version:
            if multi:
                MODEL_INFO.labels(engine, previous).set(0)
            else:
                MODEL_INFO.remove(engine, previous)
        MODEL_INFO.labels(engine, version).set(1)
    if created_ts is not None:
        MODEL_CREATED.labels(engine).set(created_ts)


def record_events(accepted: int = 0, rejected: int = 0, refused: int = 0) -> None:
    """Count events accepted (durably logged), rejected (invalid) and refused (log full) by one ``POST``."""
    if accepted < 0 or rejected < 0 or refused < 0:
        raise ValueError(f"event counts must be ≥ 0, got accepted={accepted}, rejected={rejected}, refused={refused}")
    if refused:
        EVENTS.labels("refused").inc(refused)
    if accepted:
        EVENTS.labels("accepted").inc(accepted)
        LAST_EVENT.set(time.time())
    if rejected:
        EVENTS.labels("rejected").inc(rejected)


def set_store_sizes(history: int | None = None, events: int | None = None) -> None:
    """Publish the users with a live history and/or the events in the log (``None`` leaves one unchanged)."""
    if history is not None:
        HISTORY_SIZE.set(history)
    if events is not None:
        EVENT_LOG_SIZE.set(events)


def set_event_log_backlog(unmerged: int, limit: int | None) -> None:
    """Publish the events waiting to be merged and their cap (``None``: no cap); the log-full alert reads both."""
    EVENT_LOG_UNMERGED.set(unmerged)
    EVENT_LOG_UNMERGED_LIMIT.set(float("inf") if limit is None else limit)


def set_catalogue_size(records: int, available: int) -> None:
    """Publish the catalogue's records: how many may be recommended and how many are marked unavailable."""
    CATALOGUE_ITEMS.labels("available").set(available)
    CATALOGUE_ITEMS.labels("unavailable").set(records - available)


def set_dependency_up(name: str, up: bool) -> None:
    """Publish whether a backing service (``redis``) is reachable; the "Redis unreachable" alert reads it."""
    DEPENDENCY_UP.labels(name).set(1 if up else 0)


def record_impression(engine: str, arm: str | None) -> None:
    """Count one answer recorded as an impression (``arm=None`` outside an experiment)."""
    IMPRESSIONS.labels(engine, arm or "none").inc()


def record_attributed(engine: str, arm: str | None) -> None:
    """Count one event credited to an answer, by the engine credited and the answer's arm."""
    ATTRIBUTED.labels(engine, arm or "none").inc()


_arms: set[str] = set()


def set_experiment_arms(experiment: ExperimentSettings) -> None:
    """Publish which arm is the control: the first with a positive weight of a split experiment (none for an
    interleaving one)."""
    arms = [name for name, w in experiment.weights.items() if w > 0] if experiment.mode == "split" else []
    with _versions_lock:
        for arm in _arms - set(arms):
            EXPERIMENT_CONTROL.labels(arm).set(0)
        for i, arm in enumerate(arms):
            EXPERIMENT_CONTROL.labels(arm).set(1 if i == 0 else 0)
        _arms.update(arms)


# ---- exposition --------------------------------------------------------------------------------------------
def multiprocess_enabled() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def prepare_multiprocess_dir(path: Path | None = None) -> Path:
    """Create the directory for multi-process metrics and export ``PROMETHEUS_MULTIPROC_DIR`` to it.

    Call it in the parent process *before* the workers start (they inherit the environment). Metric files left
    in it by a previous run are removed (they would otherwise be summed in); nothing else in the directory is
    touched, so pointing the variable at ``/tmp`` or a shared folder is safe.
    """
    target = path or Path(os.environ.get(MULTIPROC_ENV) or _default_multiproc_dir())
    target.mkdir(parents=True, exist_ok=True)
    for entry in target.iterdir():
        if _METRIC_FILE.fullmatch(entry.name) and entry.is_file():
            entry.unlink(missing_ok=True)
    os.environ[MULTIPROC_ENV] = str(target)
    return target


#: The files prometheus_client writes in multi-process mode: ``<type>_<pid>.db``, gauges with their mode.
_METRIC_FILE = re.compile(r"(counter|histogram|summary|gauge_[a-z]+)_\d+\.db")


def _default_multiproc_dir() -> Path:
    import tempfile

    return Path(tempfile.gettempdir()) / f"recengine-metrics-{os.getpid()}"


def mark_worker_exit(pid: int | None = None) -> None:
    """Drop this worker's live gauges from the multi-process directory (no-op in single-process mode)."""
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        mark_process_dead(pid if pid is not None else os.getpid(), directory)  # type: ignore[no-untyped-call]


class _WithModelAge:
    """Everything ``source`` collects, plus ``recengine_model_age_seconds`` computed now from the creation
    times."""

    def __init__(self, source: CollectorRegistry) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        now = time.time()
        age = GaugeMetricFamily(
            MODEL_AGE_NAME, "Seconds since the served model version was trained.", labels=["engine"]
        )
        for family in self._source.collect():
            yield family
            if family.name == "recengine_model_created_timestamp_seconds":
                for sample in family.samples:
                    age.add_metric([sample.labels["engine"]], max(0.0, now - sample.value))
        yield age


def metrics_response() -> tuple[bytes, str]:
    """The body and content type for ``GET /metrics``, merged across workers in multi-process mode."""
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        source = registry
    else:
        source = REGISTRY
    return generate_latest(_WithModelAge(source)), CONTENT_TYPE_LATEST
