"""Fallback seen through HTTP: an engine that raises, one that is too slow, and an open circuit."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient

from recengine.api.app import create_app
from recengine.data.dataset import Dataset
from recengine.settings import Settings
from tests.api.gateway_helpers import assert_problem
from tests.fakes import FakeEngine


def test_engine_failures_fall_back_and_open_the_circuit(
    make_settings: Callable[..., Settings], small_dataset: Dataset, known_user: str
) -> None:
    transformer = FakeEngine("transformer", items=small_dataset.items, needs_history=True, delay_s=0.4)
    settings = make_settings(serving={"engine_timeout_ms": 80, "breaker_failures": 2, "breaker_reset_s": 60})
    with TestClient(create_app(settings, engines={"transformer": transformer})) as c:
        params = {"user_id": known_user, "k": 3}
        ok = c.get("/api/v1/recommendations", params=params).json()
        assert ok["engine"] == "transformer" and ok["fallback"] is None

        transformer.mode = "raise"
        failed = c.get("/api/v1/recommendations", params={**params, "k": 4}).json()
        assert failed["engine"] == "ease" and "RuntimeError: fake engine failure" in failed["fallback"]

        transformer.mode = "sleep"
        slow = c.get("/api/v1/recommendations", params={**params, "k": 5})
        assert slow.status_code == 200 and slow.json()["engine"] == "ease"
        assert "no answer within 80 ms" in slow.json()["fallback"]
        assert slow.json()["took_ms"] < 350  # did not wait for the 400 ms engine

        # two consecutive failures: the circuit is open, the engine is not called any more
        calls = transformer.calls
        skipped = c.get("/api/v1/recommendations", params={**params, "k": 6}).json()
        assert skipped["engine"] == "ease" and skipped["fallback"].startswith("transformer: circuit open")
        assert transformer.calls == calls
        status = {e["name"]: e for e in c.get("/api/v1/engines").json()["engines"]}["transformer"]
        assert status["circuit"] == "open" and status["health"] == "circuit_open"
        metrics = c.get("/metrics").text
        assert 'recengine_circuit_state{engine="transformer"} 2.0' in metrics
        assert 'recengine_fallbacks_total{engine="transformer",reason="circuit_open"}' in metrics
        # each call's outcome: the first answered, the second raised, the third ran out of time
        for outcome in ("ok", "error", "timeout"):
            assert f'recengine_engine_inference_seconds_count{{engine="transformer",outcome="{outcome}"}}' in metrics


def test_no_floor_and_a_failing_engine_is_a_503_problem(
    make_settings: Callable[..., Settings], small_dataset: Dataset, tmp_path: Path
) -> None:
    ease = FakeEngine("ease", items=small_dataset.items)
    settings = make_settings(serving={"artifacts_dir": str(tmp_path / "empty")})
    with TestClient(create_app(settings, engines={"ease": ease})) as c:
        assert c.get("/ready").json()["models"] == {"ease": "v1"}
        ease.mode = "raise"
        r = c.get("/api/v1/recommendations", params={"user_id": "u", "engine": "ease"})
        assert_problem(r, 503, "no engine could answer", "ease")
        assert r.headers["retry-after"] == "1"


def test_no_models_at_all_is_not_ready(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(serving={"artifacts_dir": str(tmp_path / "none")}))) as c:
        assert c.get("/health").status_code == 200
        assert_problem(c.get("/ready"), 503, "no model loaded", "recengine train")
        assert_problem(c.get("/api/v1/recommendations", params={"user_id": "u"}), 503)


def test_an_unexpected_error_is_a_500_problem_without_a_traceback(make_settings: Callable[..., Settings]) -> None:
    # json logs: the console renderer's pretty traceback alone takes seconds
    app = create_app(make_settings(observability={"log_format": "json"}))

    async def boom() -> None:
        raise RuntimeError("secret internals")

    app.add_api_route("/boom", boom)
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/boom")
        body = assert_problem(r, 500, "internal error")
        assert "secret" not in r.text and "Traceback" not in r.text
        assert body["request_id"] in body["detail"]
