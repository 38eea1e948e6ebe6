"""Structured logs: the rendered lines, as an operator (or a log shipper) would read them."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest
import structlog

from recengine.observability import logging as rlog


@pytest.fixture(autouse=True)
def _restore_logging() -> object:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    rlog.clear_request()
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_format_carries_request_context(capsys: pytest.CaptureFixture[str]) -> None:
    rlog.configure_logging("INFO", "json")
    rlog.bind_request("req-1", route="/api/v1/recommendations")
    rlog.bind_fields(engine="ease")
    rlog.get_logger("test").info("answered", items=10)
    rlog.log_request("/api/v1/recommendations", 200, 0.0123, engine="ease")
    lines = json_lines(capsys.readouterr().err)
    assert lines[0]["event"] == "answered"
    assert lines[0]["request_id"] == "req-1"
    assert lines[0]["engine"] == "ease"
    assert lines[0]["level"] == "info"
    assert "timestamp" in lines[0]
    access = lines[1]
    assert access["status"] == 200
    assert access["latency_ms"] == 12.3
    assert access["outcome"] == "ok"
    assert access["request_id"] == "req-1"


def test_a_new_request_does_not_inherit_the_previous_context(capsys: pytest.CaptureFixture[str]) -> None:
    rlog.configure_logging("INFO", "json")
    rlog.bind_request("a", engine="neural")
    rlog.bind_request("b")
    rlog.get_logger().info("x")
    (line,) = json_lines(capsys.readouterr().err)
    assert line["request_id"] == "b"
    assert "engine" not in line


def test_context_is_isolated_between_concurrent_tasks(capsys: pytest.CaptureFixture[str]) -> None:
    rlog.configure_logging("INFO", "json")

    async def handle(rid: str) -> None:
        rlog.bind_request(rid)
        await asyncio.sleep(0.01)
        rlog.get_logger().info("done", expected=rid)

    async def main() -> None:
        await asyncio.gather(*(handle(f"r{i}") for i in range(5)))

    asyncio.run(main())
    lines = json_lines(capsys.readouterr().err)
    assert len(lines) == 5
    assert all(line["request_id"] == line["expected"] for line in lines)


def test_stdlib_loggers_share_the_json_format_and_tracebacks_stay_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rlog.configure_logging("INFO", "json")
    rlog.configure_logging("INFO", "json")  # twice: must not duplicate lines
    logging.getLogger("uvicorn.error").info("started %s", "server")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        rlog.get_logger().exception("failed")
    lines = json_lines(capsys.readouterr().err)
    assert [line["event"] for line in lines] == ["started server", "failed"]
    assert "RuntimeError: boom" in str(lines[1]["exception"])


def test_level_filters_and_console_format_is_human(capsys: pytest.CaptureFixture[str]) -> None:
    rlog.configure_logging("WARNING", "console")
    rlog.get_logger().info("hidden")
    rlog.log_request("/api/v1/events", 422, 0.002)
    err = capsys.readouterr().err
    assert "hidden" not in err
    assert "request" in err and "status=422" in err
    with pytest.raises(json.JSONDecodeError):
        json.loads(err.splitlines()[0])


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="log format 'xml'"):
        rlog.configure_logging("INFO", "xml")
    with pytest.raises(ValueError, match="log level 'LOUD'"):
        rlog.configure_logging("LOUD", "json")


@pytest.mark.parametrize(
    ("header", "kept"),
    [("abc-123_X.y", True), ("x" * 128, True), ("x" * 129, False), ("a b", False), ("id\nforged", False),
     ("", False), (None, False), ("é", False)],
)  # fmt: skip
def test_request_id_from_header(header: str | None, kept: bool) -> None:
    rid = rlog.request_id_from(header)
    assert (rid == header) is kept
    assert len(rid) <= 128 and rid.isascii()


def test_new_request_ids_are_unique() -> None:
    assert len({rlog.new_request_id() for _ in range(1000)}) == 1000


def test_current_request_id() -> None:
    rlog.clear_request()
    assert rlog.current_request_id() is None
    rlog.bind_request("r9")
    assert rlog.current_request_id() == "r9"


def test_training_summary_is_one_line_with_scalar_metrics(capsys: pytest.CaptureFixture[str]) -> None:
    rlog.configure_logging("INFO", "json")
    metrics = {"ndcg@10": 0.123456789, "recall@20": 0.3, "n_users": 300, "test": {"ndcg@10": 0.1}, "ok": True}
    rlog.log_training_summary("ease", metrics, 12.345, model_version="v7")
    (line,) = json_lines(capsys.readouterr().err)
    assert line["event"] == "training finished"
    assert line["engine"] == "ease"
    assert line["train_seconds"] == 12.35
    assert line["ndcg@10"] == 0.123457
    assert line["n_users"] == 300
    assert line["model_version"] == "v7"
    assert "test" not in line and "ok" not in line


def test_logs_follow_a_swapped_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    # CLI runners and test harnesses replace sys.stderr (and close the old one) after logging is configured.
    import io
    import sys

    rlog.configure_logging("INFO", "json")
    swapped = io.StringIO()
    monkeypatch.setattr(sys, "stderr", swapped)
    rlog.get_logger().info("after swap")
    assert json.loads(swapped.getvalue())["event"] == "after swap"


def test_recengine_train_ends_with_a_summary_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from recengine.cli import app

    monkeypatch.setenv("RECENGINE_SERVING__ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    monkeypatch.setenv("RECENGINE_OBSERVABILITY__LOG_FORMAT", "json")
    runner = CliRunner()
    data = tmp_path / "data"
    assert runner.invoke(app, ["data", "synth", "-o", str(data), "--users", "120", "--items", "40"]).exit_code == 0
    result = runner.invoke(app, ["train", "--engine", "popularity", "--data", str(data)])
    assert result.exit_code == 0, result.output
    summaries = [
        json.loads(line) for line in result.stderr.splitlines() if line.startswith("{") and "training finished" in line
    ]
    assert len(summaries) == 1
    assert summaries[0]["engine"] == "popularity" and "ndcg@10" in summaries[0] and summaries[0]["model_version"]
