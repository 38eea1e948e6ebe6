"""The metric helpers, read back through the same exposition Prometheus scrapes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from recengine.observability import metrics as m


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, content_type = m.metrics_response()
    assert content_type.startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_request_counts_and_latency_by_route_engine_status() -> None:
    route = "/api/v1/recommendations"
    labels = {"route": route, "engine": "ease", "status": "200"}
    before = value("recengine_requests_total", **labels)
    before_le = value("recengine_request_duration_seconds_bucket", **labels, le="0.01")
    m.observe_request(route, "ease", 200, 0.004)
    m.observe_request(route, "ease", 200, 0.2)
    m.observe_request(route, None, 422, 0.001)
    assert value("recengine_requests_total", **labels) == before + 2
    # 4 ms falls in the 10 ms bucket, 200 ms does not.
    assert value("recengine_request_duration_seconds_bucket", **labels, le="0.01") == before_le + 1
    assert value("recengine_requests_total", route=route, engine="none", status="422") >= 1


def test_buckets_resolve_the_100ms_slo() -> None:
    assert 0.1 in m.LATENCY_BUCKETS
    assert sum(b <= 0.1 for b in m.LATENCY_BUCKETS) >= 10
    assert list(m.LATENCY_BUCKETS) == sorted(m.LATENCY_BUCKETS)


def test_cache_outcomes_and_unknown_outcome_refused() -> None:
    before = value("recengine_cache_lookups_total", backend="redis", outcome="error")
    m.record_cache("redis", "error")
    m.record_cache("memory", "hit")
    assert value("recengine_cache_lookups_total", backend="redis", outcome="error") == before + 1
    with pytest.raises(ValueError, match="cache outcome 'maybe'"):
        m.record_cache("redis", "maybe")  # type: ignore[arg-type]


def test_fallbacks_inference_events_and_sizes() -> None:
    before = value("recengine_fallbacks_total", engine="transformer", reason="timeout")
    m.record_fallback("transformer", "timeout")
    assert value("recengine_fallbacks_total", engine="transformer", reason="timeout") == before + 1

    count = value("recengine_engine_inference_seconds_count", engine="popularity", outcome="ok")
    m.observe_inference("popularity", 0.0005, "ok")
    assert value("recengine_engine_inference_seconds_count", engine="popularity", outcome="ok") == count + 1
    with pytest.raises(ValueError, match="inference outcome 'slow'"):
        m.observe_inference("popularity", 0.0005, "slow")  # type: ignore[arg-type]

    acc = value("recengine_events_total", outcome="accepted")
    rej = value("recengine_events_total", outcome="rejected")
    started = time.time()
    m.record_events(accepted=3, rejected=1)
    assert value("recengine_events_last_accepted_timestamp_seconds") >= started
    m.record_events(accepted=0, rejected=0)
    assert value("recengine_events_total", outcome="accepted") == acc + 3
    assert value("recengine_events_total", outcome="rejected") == rej + 1
    with pytest.raises(ValueError, match="≥ 0"):
        m.record_events(accepted=-1)

    m.set_store_sizes(history=12, events=40)
    m.set_store_sizes(events=41)
    assert value("recengine_history_store_size") == 12
    assert value("recengine_event_log_size") == 41


def test_circuit_state_and_dependency() -> None:
    m.set_circuit_state("neural", "open")
    assert value("recengine_circuit_state", engine="neural") == 2
    m.set_circuit_state("neural", "half-open")
    assert value("recengine_circuit_state", engine="neural") == 1
    m.set_circuit_state("neural", "closed")
    assert value("recengine_circuit_state", engine="neural") == 0
    with pytest.raises(ValueError, match="circuit state 'ajar'"):
        m.set_circuit_state("neural", "ajar")
    m.set_dependency_up("redis", False)
    assert value("recengine_dependency_up", dependency="redis") == 0
    m.set_dependency_up("redis", True)
    assert value("recengine_dependency_up", dependency="redis") == 1


def test_model_version_replaces_the_previous_one_and_age_is_derived() -> None:
    created = time.time() - 3600
    m.set_model("transformer", "v1", created)
    m.set_model("transformer", "v2", created)
    samples = scrape()
    info = {k[1]: v for k, v in samples.items() if k[0] == "recengine_model_info"}
    assert info[(("engine", "transformer"), ("version", "v2"))] == 1
    assert (("engine", "transformer"), ("version", "v1")) not in info
    age = samples[("recengine_model_age_seconds", (("engine", "transformer"),))]
    assert 3600 <= age < 3700


def test_every_exposed_recengine_metric_is_declared() -> None:
    m.observe_request("/health", None, 200, 0.001)
    m.set_model("popularity", "p1", time.time())
    # ``*_created`` series are the client's own bookkeeping, not names anyone queries.
    exposed = {n for n, _ in scrape() if n.startswith("recengine_") and not n.endswith("_created")}
    bases = {n.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum") for n in exposed}
    assert bases <= m.METRIC_NAMES
    assert "recengine_requests_total" in exposed


_WORKER = """
import sys, time
from recengine.observability import metrics as m
n = int(sys.argv[1])
for _ in range(n):
    m.observe_request("/api/v1/recommendations", "ease", 200, 0.003)
m.record_events(accepted=n)
m.set_store_sizes(events=100 + n)
m.set_circuit_state("ease", "open" if n == 2 else "closed")
m.set_model("ease", "v" + str(n), time.time() - 1000 * n)
if len(sys.argv) > 2:
    m.mark_worker_exit()
"""

_SCRAPE = """
from recengine.observability import metrics as m
body, _ = m.metrics_response()
print(body.decode())
"""


def test_multiprocess_mode_aggregates_across_workers(tmp_path: Path) -> None:
    directory = tmp_path / "prom"
    env = {**os.environ, m.MULTIPROC_ENV: str(directory)}
    # The parent prepares the directory as ``serve`` does; the workers are fresh interpreters that inherit it.
    saved = os.environ.get(m.MULTIPROC_ENV)
    try:
        assert m.prepare_multiprocess_dir(directory) == directory
        assert os.environ[m.MULTIPROC_ENV] == str(directory)
    finally:
        if saved is None:
            os.environ.pop(m.MULTIPROC_ENV, None)
        else:
            os.environ[m.MULTIPROC_ENV] = saved
    # Two live workers, and a third that exits cleanly (its live gauges must vanish, its counters stay).
    for args in (["2"], ["3"], ["5", "exit"]):
        subprocess.run([sys.executable, "-c", _WORKER, *args], env=env, check=True, timeout=60)
    out = subprocess.run(
        [sys.executable, "-c", _SCRAPE], env=env, check=True, timeout=60, capture_output=True, text=True
    ).stdout
    samples = {}
    for family in text_string_to_metric_families(out):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    key = (("engine", "ease"), ("route", "/api/v1/recommendations"), ("status", "200"))
    assert samples[("recengine_requests_total", key)] == 10
    assert samples[("recengine_request_duration_seconds_count", key)] == 10
    assert samples[("recengine_events_total", (("outcome", "accepted"),))] == 10
    # livemax over the live workers (2 and 3): the dead worker's 105 is gone.
    assert samples[("recengine_event_log_size", ())] == 103
    assert samples[("recengine_circuit_state", (("engine", "ease"),))] == 2
    info = {k[1]: v for k, v in samples.items() if k[0] == "recengine_model_info"}
    assert info == {(("engine", "ease"), ("version", "v2")): 1, (("engine", "ease"), ("version", "v3")): 1}
    # The oldest model still served (worker 3: 3000 s) drives the age.
    assert 3000 <= samples[("recengine_model_age_seconds", (("engine", "ease"),))] < 3100


@pytest.fixture
def multiproc_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """prepare_multiprocess_dir exports PROMETHEUS_MULTIPROC_DIR: put the variable back as it was afterwards."""
    monkeypatch.setenv(m.MULTIPROC_ENV, os.environ.get(m.MULTIPROC_ENV, ""))
    if not os.environ[m.MULTIPROC_ENV]:
        monkeypatch.delenv(m.MULTIPROC_ENV)


@pytest.mark.usefixtures("multiproc_env")
def test_prepare_multiprocess_dir_empties_a_stale_directory(tmp_path: Path) -> None:
    directory = tmp_path / "prom"
    directory.mkdir()
    (directory / "counter_123.db").write_bytes(b"stale")
    m.prepare_multiprocess_dir(directory)
    assert list(directory.iterdir()) == []


@pytest.mark.usefixtures("multiproc_env")
def test_prepare_multiprocess_dir_removes_only_its_own_files(tmp_path: Path) -> None:
    # PROMETHEUS_MULTIPROC_DIR may name /tmp or a shared folder: everything that is not a metric file stays.
    directory = tmp_path / "shared"
    (directory / "project").mkdir(parents=True)
    (directory / "project" / "notes.txt").write_text("keep")
    (directory / "report.db").write_text("keep")
    (directory / "gauge_livesum_77.db").write_bytes(b"stale")
    (directory / "histogram_77.db").write_bytes(b"stale")
    m.prepare_multiprocess_dir(directory)
    assert sorted(p.name for p in directory.iterdir()) == ["project", "report.db"]
    assert (directory / "project" / "notes.txt").read_text() == "keep"


def test_import_creates_a_missing_multiprocess_dir(tmp_path: Path) -> None:
    # ``serve --workers N`` imports this module in the parent before it prepares the directory.
    directory = tmp_path / "not" / "yet"
    env = {**os.environ, m.MULTIPROC_ENV: str(directory)}
    code = "from recengine.observability import metrics as m; m.record_events(accepted=1); print('ok')"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert directory.is_dir() and any(directory.glob("counter_*.db"))
