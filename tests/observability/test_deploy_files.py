"""The deployment files: Grafana dashboard, compose file and Dockerfile, checked without a Docker engine."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from recengine.observability.metrics import METRIC_NAMES

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "recengine.json"

# Words of PromQL that are not metric names, and the series Prometheus itself provides.
_PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
    "inf", "nan",
}  # fmt: skip
_BUILTIN_SERIES = {"up"}
_HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects: identifiers outside strings, label sets and ranges, not called."""
    stripped = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    stripped = re.sub(r"\{[^}]*\}", " ", stripped)
    stripped = re.sub(r"\[[^\]]*\]", " ", stripped)
    stripped = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", stripped)
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", stripped):
        word = match.group(0)
        following = stripped[match.end() :].lstrip()
        if following.startswith("(") or word.lower() in _PROMQL_WORDS:
            continue
        names.add(word)
    return names


def base_name(name: str) -> str:
    for suffix in _HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name.removesuffix(suffix) in METRIC_NAMES:
            return name.removesuffix(suffix)
    return name


def test_metric_name_extraction() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (engine, le) "
        '(rate(recengine_request_duration_seconds_bucket{route=~"/a.*",engine!="none"}[5m]))) '
        '/ on() group_left() scalar(up{job="x"}) > bool 1e3'
    )
    assert metric_names(expr) == {"recengine_request_duration_seconds_bucket", "up"}


def test_dashboard_is_valid_and_uses_only_declared_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    used: set[str] = set()
    for panel in panels:
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "prometheus", panel["title"]
            names = {base_name(n) for n in metric_names(target["expr"])}
            unknown = names - METRIC_NAMES - _BUILTIN_SERIES
            assert not unknown, f"panel {panel['title']!r} uses undeclared metrics {sorted(unknown)}"
            used |= names
    # What the issue asks the dashboard to show.
    titles = " ".join(p["title"].lower() for p in panels)
    topics = (
        "requests/s",
        "p50",
        "p95",
        "p99",
        "error",
        "fallback",
        "cache hit",
        "events/s",
        "model versions",
    )
    for topic in topics:
        assert topic in titles, f"dashboard has no panel about {topic!r}"
    assert {"recengine_requests_total", "recengine_fallbacks_total", "recengine_cache_lookups_total"} <= used
    assert {"recengine_events_total", "recengine_model_info", "recengine_request_duration_seconds"} <= used


def test_grafana_provisioning_points_at_the_dashboard_and_prometheus() -> None:
    prov = DEPLOY / "grafana" / "provisioning"
    ds = yaml.safe_load((prov / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    assert ds["uid"] == "prometheus" and ds["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((prov / "dashboards" / "recengine.yml").read_text())["providers"][0]
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert any(m.endswith(":" + provider["options"]["path"] + ":ro") for m in mounts)


def test_alert_rules_use_only_declared_metrics() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    for group in rules["groups"]:
        for rule in group["rules"]:
            names = {base_name(n) for n in metric_names(rule["expr"])}
            unknown = names - METRIC_NAMES - recorded - _BUILTIN_SERIES
            name = rule.get("alert") or rule.get("record")
            assert not unknown, f"{name}: undeclared metrics {sorted(unknown)}"


def test_compose_file_describes_the_whole_stack() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"api", "lb", "redis", "prometheus", "grafana", "mlflow", "trainer"} <= set(services)
    api = services["api"]
    assert api["deploy"]["replicas"] >= 2
    assert "ports" not in api, "replicas are reached through the load balancer, not published one by one"
    assert api["depends_on"]["trainer"]["condition"] == "service_completed_successfully"
    assert api["environment"]["RECENGINE_CACHE__REDIS_URL"].startswith("redis://redis:")
    assert services["trainer"]["restart"] == "no"
    assert "healthcheck" in services["redis"]


def test_compose_redis_never_evicts_and_the_event_stream_is_capped() -> None:
    # Eviction would silently drop the event stream; the bound is the service's cap on unmerged events.
    services = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]
    command = services["redis"]["command"]
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert "--maxmemory" in command
    cap = int(services["api"]["environment"]["RECENGINE_SERVING__MAX_UNMERGED_EVENTS"])
    assert 1 <= cap <= 10_000_000


def test_dockerfile_is_multi_stage_non_root_with_healthcheck() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, flags=re.M)) >= 2
    assert "download.pytorch.org/whl/cpu" in text
    users = re.findall(r"^USER (\S+)", text, flags=re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*?/health", text, flags=re.M | re.S)
    entry = re.search(r"^ENTRYPOINT (\[.*\])", text, flags=re.M)
    cmd = re.search(r"^CMD (\[.*\])", text, flags=re.M)
    assert entry and cmd
    assert json.loads(entry.group(1)) == ["recengine"]
    assert json.loads(cmd.group(1))[:3] == ["serve", "--host", "0.0.0.0"]


def _compose_cli() -> list[str] | None:
    """Docker Compose v2 (the plugin or a v2 ``docker-compose``); v1 predates the Compose Specification."""
    for cmd in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(cmd[0]) is None:
            continue
        probe = subprocess.run([*cmd, "version", "--short"], capture_output=True, text=True, timeout=30)
        if probe.returncode == 0 and probe.stdout.strip().lstrip("v").startswith("2"):
            return cmd
    return None


def test_docker_compose_config_parses() -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("no Docker Compose v2 CLI on this machine")
    result = subprocess.run(
        [*cli, "-f", str(DEPLOY / "docker-compose.yml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
