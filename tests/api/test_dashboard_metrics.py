"""Every series a dashboard panel or an alert rule queries is fed by a live app, not only declared.

The scenario runs the real app (trained popularity and EASE, a fake transformer that can be made to fail or hang,
a private Redis that is stopped and started again) through what operators look at: answers cached and not, a
timeout, engine errors until the circuit opens, events accepted and rejected, a Redis outage and its recovery, a
reload. Then each metric name of every PromQL expression must have a sample that is not zero (a series stuck at
0 is one nobody feeds), and each label value an expression selects (``outcome="error"``, ``status=~"5.."``) must
be among its non-zero samples.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from recengine.api.app import create_app
from recengine.data.dataset import Dataset
from recengine.engines.artifact import set_current, version_dir
from recengine.engines.popularity import Popularity
from recengine.observability import metrics
from recengine.settings import Settings
from tests.api.gateway_helpers import ADMIN_KEY
from tests.api.test_redis_outage import PrivateRedis, private_redis, wait_for
from tests.fakes import FakeEngine
from tests.observability.test_deploy_files import DASHBOARD, DEPLOY, base_name, metric_names

pytestmark = pytest.mark.redis

__all__ = ["private_redis"]  # the fixture, shared with the outage test

#: ``metric{label="value", label=~"regex"}``: the selectors whose label matchers must find samples.
_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


def queried_exprs() -> dict[str, str]:
    """Every PromQL expression of the dashboard's panels (rows included) and of the alert rules, by where."""
    out: dict[str, str] = {}

    def walk(panels: list[dict[str, object]]) -> None:
        for panel in panels:
            for i, target in enumerate(panel.get("targets", [])):  # type: ignore[arg-type]
                out[f"panel {panel['title']!r} #{i}"] = target["expr"]
            walk(panel.get("panels", []))  # type: ignore[arg-type]

    walk(json.loads(DASHBOARD.read_text())["panels"])
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            out[f"rule {rule.get('alert') or rule.get('record')}"] = rule["expr"]
    return out


def queries() -> tuple[set[str], set[tuple[str, str, str, str]]]:
    """(metric names, ``(metric, label, op, value)`` positive matchers) that the dashboard and the rules read;
    histograms by their base name, Prometheus's own series and the rules' recorded series left out."""
    names: set[str] = set()
    matchers: set[tuple[str, str, str, str]] = set()
    for expr in queried_exprs().values():
        names |= {base_name(n) for n in metric_names(expr)}
        for name, body in _SELECTOR.findall(expr):
            for label, op, value in _MATCHER.findall(body):
                if op in ("=", "=~"):
                    matchers.add((base_name(name), label, op, value))
    ours = {n for n in names if n in metrics.METRIC_NAMES}
    return ours, {m for m in matchers if m[0] in ours}


def test_the_queries_are_found() -> None:
    names, matchers = queries()
    assert {"recengine_cache_lookups_total", "recengine_history_store_size", "recengine_model_age_seconds"} <= names
    assert ("recengine_cache_lookups_total", "outcome", "=", "error") in matchers
    assert ("recengine_requests_total", "status", "=~", "5..") in matchers


def samples_by_metric(text: str) -> dict[str, list[Sample]]:
    """Samples of each metric as the dashboard names it (a histogram by its ``_count``), ``_created`` left out."""
    out: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            if family.type == "histogram":
                if sample.name != family.name + "_count":
                    continue
                out.setdefault(family.name, []).append(sample)
            else:
                out.setdefault(sample.name, []).append(sample)
    return out


@pytest.fixture
def fresh_metrics() -> Iterator[None]:
    """Every series of the process emptied (labelled) or zeroed (unlabelled): only this scenario can feed them,
    not another test that ran before in this process."""
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            value.clear()  # a no-op for the unlabelled ones, set to zero next
    metrics.set_store_sizes(history=0, events=0)
    metrics.LAST_EVENT.set(0)
    yield


def test_every_queried_metric_is_fed_by_a_live_app(
    fresh_metrics: None,
    private_redis: PrivateRedis,
    make_settings: Callable[..., Settings],
    trained_artifacts: Path,
    small_dataset: Dataset,
    known_user: str,
    known_item: str,
    tmp_path: Path,
) -> None:
    root = tmp_path / "artifacts"
    shutil.copytree(trained_artifacts, root)
    transformer = FakeEngine("transformer", items=small_dataset.items, needs_history=True, delay_s=0.3)
    settings = make_settings(
        serving={
            "artifacts_dir": str(root),
            "engine_timeout_ms": 60,
            "breaker_failures": 3,
            "breaker_reset_s": 60,
            "reload_poll_s": 0.05,
            "events_backend": "redis",
            "max_batch_events": 5,
            "max_unmerged_events": 5,  # small, so that the scenario fills the log and sees the refusal
        },
        cache={"redis_url": private_redis.url, "retry_after_s": 0.2, "redis_timeout_ms": 200},
        # One arm, the engine the rules would pick anyway: the experiment series are fed without changing routing.
        routing={"experiment": {"name": "dash", "weights": {"transformer": 1.0}}},
    )
    auth = {"X-API-Key": ADMIN_KEY}
    with TestClient(create_app(settings, engines={"transformer": transformer}), raise_server_exceptions=False) as c:

        def recommend(k: int) -> dict[str, object]:
            r = c.get("/api/v1/recommendations", params={"user_id": known_user, "k": k})
            assert r.status_code == 200, r.text
            body: dict[str, object] = r.json()
            return body

        def metric(name: str) -> float:
            return sum(s.value for s in samples_by_metric(c.get("/metrics").text).get(name, []))

        assert recommend(3)["engine"] == "transformer"
        shown = recommend(3)
        assert shown["cached"] is True and shown["experiment"] == {"name": "dash", "arm": "transformer"}
        clicked = {"user_id": known_user, "item_id": shown["items"][0]["item_id"]}  # type: ignore[index]
        assert c.post("/api/v1/events", json=clicked).json()["attributed"] == 1
        transformer.mode = "sleep"
        assert "no answer within 60 ms" in str(recommend(4)["fallback"])
        time.sleep(0.35)  # the hung call leaves the transformer's pool
        transformer.mode = "raise"
        for k in (5, 6):
            assert "fake engine failure" in str(recommend(k)["fallback"])
        assert str(recommend(7)["fallback"]).startswith("transformer: circuit open")
        assert c.get(f"/api/v1/items/{known_item}/similar", params={"k": 3}).status_code == 200

        events = [{"user_id": f"dash-{u}", "item_id": known_item} for u in range(3)]
        assert c.post("/api/v1/events", json=events).json()["accepted"] == 3
        assert c.post("/api/v1/events", json={"user_id": "dash-0"}).status_code == 422
        wait_for(lambda: metric("recengine_history_store_size") >= 3)  # the upkeep publishes it; checked below

        private_redis.stop()
        assert recommend(8)["engine"] == "ease"  # served from memory
        assert c.post("/api/v1/events", json=events[0]).status_code == 503  # the Redis event log cannot write
        assert c.get("/ready").json()["status"] == "degraded"
        private_redis.start()  # same port, empty data
        assert wait_for(lambda: c.get("/ready").json()["status"] == "ready")
        assert c.post("/api/v1/events", json=events).json()["accepted"] == 3
        recommend(9)
        for batch in range(3):  # nothing merges the log here: it fills up and refuses (backpressure)
            more = [{"user_id": f"dash-{u}", "item_id": known_item, "event_id": f"fill-{batch}-{u}"} for u in range(3)]
            refused = c.post("/api/v1/events", json=more)
            if refused.status_code != 200:
                break
        assert refused.status_code == 503 and refused.json()["type"].endswith("event-log-full"), refused.text

        model = Popularity.fit(small_dataset)
        model.config["version"] = "p2"
        set_current(model.save(version_dir(root, "popularity", "p2")))
        reloaded = c.post("/api/v1/admin/reload", headers=auth, json={"engines": ["popularity"]}).json()
        assert reloaded["results"][0]["status"] == "loaded"
        wait_for(lambda: metric("recengine_history_store_size") >= 3 and metric("recengine_event_log_size") >= 3)
        scraped = samples_by_metric(c.get("/metrics").text)

    names, matchers = queries()
    problems = [f"{n}: no non-zero sample" for n in sorted(names) if not any(s.value for s in scraped.get(n, []))]
    for name, label, op, value in sorted(matchers):
        fed = [s.labels.get(label, "") for s in scraped.get(name, []) if s.value]
        if not (value in fed if op == "=" else any(re.fullmatch(value, v) for v in fed)):
            problems.append(f'{name}{{{label}{op}"{value}"}}: no non-zero sample (fed: {sorted(set(fed))})')
    assert not problems, "queried by the dashboard or an alert rule, never fed:\n" + "\n".join(problems)
    # The inference panel reads every call whatever its outcome: each way a call ends is counted.
    outcomes = {
        s.labels["outcome"]
        for s in scraped["recengine_engine_inference_seconds"]
        if s.labels["engine"] == "transformer" and s.value
    }
    assert outcomes == {"ok", "error", "timeout"}
