"""The Docker image's entry point as a plain process (2 workers): /metrics adds them up; SIGTERM drains."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.reliability import reliability_harness as rh
from tests.reliability.reliability_harness import Deployment

pytestmark = pytest.mark.reliability

ROOT = Path(__file__).resolve().parents[2]


def request_count(base_url: str) -> float:
    text = httpx.get(base_url + "/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if (
                s.name == "recengine_requests_total"
                and s.labels.get("route") == "/api/v1/recommendations"
                and s.labels.get("engine") == "popularity"
                and s.labels.get("status") == "200"
            ):
                return s.value
    return 0.0


def docker_command(port: int) -> tuple[list[str], dict[str, str]]:
    """The image's ENTRYPOINT + CMD and its RECENGINE_ environment, with a loopback host and a free port."""
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    entry = json.loads(re.search(r"^ENTRYPOINT (\[.*\])", text, flags=re.M).group(1))  # type: ignore[union-attr]
    cmd = json.loads(re.search(r"^CMD (\[.*\])", text, flags=re.M).group(1))  # type: ignore[union-attr]
    for flag, value in (("--host", "127.0.0.1"), ("--port", str(port))):
        cmd[cmd.index(flag) + 1] = value
    script = Path(sys.executable).parent / entry[0]
    program = [str(script)] if script.is_file() else [sys.executable, "-m", "recengine.cli"]
    env = dict(re.findall(r"(RECENGINE_[A-Z_]+)=(\S+)", text))
    return [*program, *entry[1:], *cmd], env


def test_docker_entrypoint_runs_with_two_workers_and_metrics_add_up(
    deployment: Deployment, spawn: list[rh.ServerProcess], tmp_path: Path
) -> None:
    port = rh.free_port()
    command, image_env = docker_command(port)
    assert "--workers" in command and command[command.index("--workers") + 1] == "2"
    multiproc = tmp_path / "prom"
    env = deployment.env(PROMETHEUS_MULTIPROC_DIR=str(multiproc))
    # The image's settings (prod profile), pointed at this test's data set and models.
    env.update({k: v for k, v in image_env.items() if "DIR" not in k})
    server = rh.ServerProcess(command, env, tmp_path / "server.log", port)
    spawn.append(server.start(timeout_s=90))
    assert httpx.get(server.base_url + "/ready", timeout=5).json()["status"] == "ready"

    async def send(first: int, n: int) -> list[int]:
        # A fresh client per round: new connections, which the kernel hands to whichever worker accepts first.
        limits = httpx.Limits(max_connections=16)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10, limits=limits) as client:
            sem = asyncio.Semaphore(16)

            async def one(i: int) -> int:
                async with sem:
                    params = {"user_id": f"u-{i}", "engine": "popularity", "k": 5}
                    return (await client.get("/api/v1/recommendations", params=params)).status_code

            return await asyncio.gather(*(one(i) for i in range(first, first + n)))

    sent, rounds = 0, 0
    while rounds < 30 and (rounds < 3 or len(list(multiproc.glob("counter_*.db"))) < 2):
        statuses = asyncio.run(send(sent, 50))
        assert statuses.count(200) == 50
        sent, rounds = sent + 50, rounds + 1
    files = sorted(p.name for p in multiproc.glob("counter_*.db"))
    # A request is counted just after its response is sent: give a starved worker a moment to catch up.
    deadline = time.monotonic() + 10
    while request_count(server.base_url) != sent and time.monotonic() < deadline:
        time.sleep(0.1)
    # Then every scrape, whichever worker answers it, must show the full count.
    counts = [request_count(server.base_url) for _ in range(6)]
    print(f"[docker entry point, 2 workers] {sent} requests; /metrics counted {counts}; per-worker files {files}")
    assert len(files) >= 2, f"after {rounds} rounds only one worker had answered"
    assert counts == [sent] * 6
    # The prod profile logs JSON lines (a 4xx access line is a warning, above the test's log level).
    httpx.get(server.base_url + "/api/v1/items/no-such-item/similar", headers={"X-Request-ID": "trace-404"})
    server.stop()
    lines = [line for line in server.log_path.read_text().splitlines() if line.startswith("{")]
    records = [json.loads(line) for line in lines]
    assert any(r.get("request_id") == "trace-404" and r.get("status") == 404 for r in records), lines[-5:]


def test_sigterm_drains_in_flight_requests(
    deployment: Deployment, spawn: list[rh.ServerProcess], tmp_path: Path
) -> None:
    switch = tmp_path / "fault"
    switch.write_text("hang 1.0")
    port = rh.free_port()
    env = deployment.env(
        RECENGINE_FAULT_FILE=str(switch),
        RECENGINE_SERVING__ENGINE_TIMEOUT_MS="5000",
        RECENGINE_SERVING__INFERENCE_WORKERS="8",
        RECENGINE_CACHE__TTL_S="0",
    )
    server = rh.ServerProcess(rh.fault_server_command(port), env, tmp_path / "server.log", port)
    spawn.append(server.start())

    async def in_flight() -> list[int]:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
            params = {"user_id": deployment.users[0], "engine": "transformer"}
            pending = [
                asyncio.create_task(client.get("/api/v1/recommendations", params={**params, "k": k}))
                for k in range(1, 7)
            ]
            await asyncio.sleep(0.3)  # all six are inside the slow engine now
            assert server.proc is not None
            server.proc.terminate()
            started = time.perf_counter()
            responses = await asyncio.gather(*pending, return_exceptions=True)
            print(f"[graceful stop] in-flight requests finished {time.perf_counter() - started:.2f} s after SIGTERM")
            return [r.status_code if isinstance(r, httpx.Response) else 0 for r in responses]

    statuses = asyncio.run(in_flight())
    assert statuses == [200] * 6, statuses
    # uvicorn re-raises the signal once drained, so the exit is "killed by SIGTERM", not a crash code.
    assert server.proc is not None and server.proc.wait(15) in (0, -15)
    with pytest.raises(httpx.TransportError):
        httpx.get(server.base_url + "/health", timeout=1)
