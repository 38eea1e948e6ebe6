"""Prometheus rules and config under promtool: syntax, the alert unit tests, and the dashboard's PromQL.

promtool comes from Debian's ``prometheus`` package (``apt-get install -y prometheus``; ``.ci/run`` installs
it). Without it these tests skip, unless RECENGINE_REQUIRE_PROMTOOL=1 makes a missing promtool a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROM = DEPLOY / "prometheus"


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        reason = "no promtool: apt-get install -y prometheus (RECENGINE_REQUIRE_PROMTOOL=1 makes this a failure)"
        if os.environ.get("RECENGINE_REQUIRE_PROMTOOL") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def run(*args: str, cwd: Path = PROM) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=120)


def test_check_rules(promtool: str) -> None:
    result = run(promtool, "check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_unit_tests(promtool: str) -> None:
    result = run(promtool, "test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_check_config(promtool: str) -> None:
    result = run(promtool, "check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_threshold_is_caught_by_the_unit_tests(promtool: str, tmp_path: Path) -> None:
    # The unit tests must be able to fail: raise the error-rate threshold and they must notice.
    rules = (PROM / "alerts.yml").read_text()
    assert "recengine:request_errors:ratio_rate5m > 0.01" in rules
    (tmp_path / "alerts.yml").write_text(rules.replace("ratio_rate5m > 0.01", "ratio_rate5m > 0.05"))
    shutil.copy(PROM / "alerts_test.yml", tmp_path / "alerts_test.yml")
    result = run(promtool, "test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert result.returncode != 0


def test_the_event_log_alert_fires_before_the_cap(promtool: str, tmp_path: Path) -> None:
    # The test series level off at 85 % of the cap: a warning set at 90 % would come too late, and must be caught.
    rules = (PROM / "alerts.yml").read_text()
    assert "record: recengine:config:event_log_full_ratio\n        expr: vector(0.8)" in rules
    (tmp_path / "alerts.yml").write_text(rules.replace("expr: vector(0.8)", "expr: vector(0.9)"))
    shutil.copy(PROM / "alerts_test.yml", tmp_path / "alerts_test.yml")
    result = run(promtool, "test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert result.returncode != 0 and "RecengineEventLogFilling" in result.stdout + result.stderr


def test_the_experiment_alert_waits_for_significance(promtool: str, tmp_path: Path) -> None:
    # The quiet case's arm is 2.9 standard errors below the control: a threshold of 2.5 would page for it, and the
    # unit tests must notice; so must they a rule that forgets the minimum number of answers.
    rules = (PROM / "alerts.yml").read_text()
    assert "record: recengine:config:experiment_alert_z\n        expr: vector(3)" in rules
    for broken in (
        rules.replace("experiment_alert_z\n        expr: vector(3)", "experiment_alert_z\n        expr: vector(2.5)"),
        rules.replace(
            "experiment_min_impressions\n        expr: vector(500)",
            "experiment_min_impressions\n        expr: vector(1)",
        ),
    ):
        assert broken != rules
        (tmp_path / "alerts.yml").write_text(broken)
        shutil.copy(PROM / "alerts_test.yml", tmp_path / "alerts_test.yml")
        result = run(promtool, "test", "rules", "alerts_test.yml", cwd=tmp_path)
        assert result.returncode != 0 and "RecengineExperimentArmBelowControl" in result.stdout + result.stderr


def test_every_issue_alert_is_defined_and_tested() -> None:
    rules = yaml.safe_load((PROM / "alerts.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert alerts == {
        "RecengineHighErrorRate",
        "RecengineHighLatencyP99",
        "RecengineHighFallbackRate",
        "RecengineRedisUnreachable",
        "RecengineModelTooOld",
        "RecengineNoEvents",
        "RecengineEventLogFilling",
        "RecengineEventsRefused",
        "RecengineExperimentArmBelowControl",
    }
    tests = yaml.safe_load((PROM / "alerts_test.yml").read_text())["tests"]
    for alert in alerts:
        cases = [c for t in tests for c in t.get("alert_rule_test", []) if c["alertname"] == alert]
        assert any(c["exp_alerts"] for c in cases), f"{alert}: no test where it fires"
        assert any(not c["exp_alerts"] for c in cases), f"{alert}: no test where it stays quiet"


def test_dashboard_promql_parses(promtool: str, tmp_path: Path) -> None:
    # promtool has no stand-alone PromQL parser; a recording rule per panel query gets the same parser.
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "recengine.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs
    records = [{"record": f"q{i}", "expr": e} for i, e in enumerate(exprs)]
    rules = {"groups": [{"name": "dashboard", "rules": records}]}
    (tmp_path / "dashboard_rules.yml").write_text(yaml.safe_dump(rules))
    result = run(promtool, "check", "rules", "dashboard_rules.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
