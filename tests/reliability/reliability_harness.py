"""The reliability suite's tools: a server subprocess, a private Redis, an open-loop load generator, a report.

Everything listens on 127.0.0.1 only, on ports the OS picks. Kept apart from ``conftest.py`` so test modules can
import the classes (``from tests.reliability import reliability_harness as rh``).
"""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

HERE = Path(__file__).resolve().parent
SECONDS = float(os.environ.get("RECENGINE_RELIABILITY_SECONDS", "20"))
RPS = float(os.environ.get("RECENGINE_RELIABILITY_RPS", "50"))
#: A request counts as available when it is answered 2xx within this budget (5× the 100 ms latency SLO).
BUDGET_S = float(os.environ.get("RECENGINE_RELIABILITY_BUDGET_S", "0.5"))
SLO_P99_S = 0.100
MIN_AVAILABILITY = 0.999
ADMIN_KEY = "reliability-admin-key-0123456789"

#: Every load run's report, printed in the pytest terminal summary (see conftest.py).
REPORTS: list[LoadReport] = []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Deployment:
    """A data set and an artifacts folder a server can be pointed at."""

    root: Path
    data_dir: Path
    artifacts_dir: Path
    users: list[str]
    items: list[str]

    def env(self, **settings: str) -> dict[str, str]:
        """The server's environment: this deployment, the test profile, and ``settings`` (RECENGINE_ keys)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RECENGINE_", "PROMETHEUS_MULTIPROC"))}
        env.update(
            RECENGINE_PROFILE="test",
            RECENGINE_DATA__DIR=str(self.data_dir),
            RECENGINE_SERVING__ARTIFACTS_DIR=str(self.artifacts_dir),
            RECENGINE_SERVING__EVENTS_DB=str(self.root / "events.sqlite3"),
            RECENGINE_SERVING__ADMIN_API_KEY=ADMIN_KEY,
            RECENGINE_SERVING__RELOAD_POLL_S="1",
            RECENGINE_CACHE__RETRY_AFTER_S="1",
            RECENGINE_OBSERVABILITY__LOG_LEVEL="WARNING",
        )
        env.update(settings)
        return env


# ---- processes -----------------------------------------------------------------------------------------------------
class ServerProcess:
    """``recengine serve`` (or another command) on 127.0.0.1:<free port>, its output kept in a log file."""

    def __init__(self, command: Sequence[str], env: dict[str, str], log_path: Path, port: int) -> None:
        self.command = list(command)
        self.env = env
        self.log_path = log_path
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60.0) -> ServerProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode} during start-up:\n{self.log_tail()}")
            try:
                if httpx.get(self.base_url + "/health", timeout=0.5).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"server not healthy after {timeout_s:.0f} s:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM (graceful: in-flight requests drain), then SIGKILL if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return "(no log)"


class RedisProcess:
    """A private, non-persistent redis-server on a free loopback port, which a test may kill and restart."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server not found (apt-get install -y redis-server)")
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisProcess:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", str(self.workdir)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def python_command(*args: str) -> list[str]:
    return [sys.executable, *args]


def serve_command(port: int) -> list[str]:
    """The production entry point, exactly as the Docker image runs it (with a loopback host)."""
    return python_command("-m", "recengine.cli", "serve", "--host", "127.0.0.1", "--port", str(port))


def fault_server_command(port: int) -> list[str]:
    return python_command(str(HERE / "fault_server.py"), "--port", str(port))


# ---- load ----------------------------------------------------------------------------------------------------------
@dataclass
class Sample:
    t: float
    """Seconds since the load started, when the request was sent."""
    latency: float
    status: int
    """HTTP status; 0 when no response came back (connection error, client timeout)."""
    label: str
    body: dict[str, Any] | None = None
    error: str | None = None


@dataclass
class LoadReport:
    name: str
    samples: list[Sample]
    fault_windows: list[tuple[float, float]] = field(default_factory=list)
    duration_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    def in_fault(self, t: float) -> bool:
        return any(a <= t <= b for a, b in self.fault_windows)

    @property
    def total(self) -> int:
        return len(self.samples)

    @property
    def available(self) -> int:
        return sum(1 for s in self.samples if 200 <= s.status < 300 and s.latency <= BUDGET_S)

    @property
    def availability(self) -> float:
        return self.available / self.total if self.total else 0.0

    @property
    def failed(self) -> list[Sample]:
        return [s for s in self.samples if not 200 <= s.status < 300]

    def percentiles(self, outside_faults: bool = True) -> dict[str, float]:
        chosen = [s.latency for s in self.samples if not (outside_faults and self.in_fault(s.t))]
        if not chosen:
            return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan"), "n": 0}
        arr = np.asarray(chosen) * 1000.0
        return {
            "p50": float(np.percentile(arr, 50)),
            "p95": float(np.percentile(arr, 95)),
            "p99": float(np.percentile(arr, 99)),
            "max": float(arr.max()),
            "n": len(chosen),
        }

    def summary(self) -> str:
        clean = self.percentiles(True)
        every = self.percentiles(False)
        windows = ", ".join(f"{a:.1f}–{b:.1f} s" for a, b in self.fault_windows) or "none"
        rate = self.total / max(self.duration_s, 1e-9)
        lines = [
            f"[{self.name}] {self.total} requests in {self.duration_s:.1f} s ({rate:.0f}/s)",
            f"  availability (2xx within {BUDGET_S * 1000:.0f} ms): {self.availability * 100:.3f} % "
            f"({self.total - self.available} not available, {len(self.failed)} non-2xx)",
            f"  latency outside fault windows ({windows}; n={clean['n']}): p50 {clean['p50']:.1f} ms, "
            f"p95 {clean['p95']:.1f} ms, p99 {clean['p99']:.1f} ms, max {clean.get('max', float('nan')):.1f} ms",
            f"  latency over the whole run: p99 {every['p99']:.1f} ms, max {every.get('max', float('nan')):.1f} ms",
        ]
        lines += [f"  {note}" for note in self.notes]
        return "\n".join(lines)


RequestFactory = Callable[[int], tuple[str, str, dict[str, Any]]]
"""i → (label, method, httpx request kwargs incl. ``url``)."""


async def run_load(
    base_url: str,
    make_request: RequestFactory,
    seconds: float,
    rate: float,
    timeline: Sequence[tuple[float, Callable[[], Any]]] = (),
    keep_body: Callable[[str], bool] = lambda label: False,
) -> tuple[list[Sample], float]:
    """Open-loop load: request *i* is sent at i / rate seconds whatever happened to the earlier ones.

    ``timeline`` holds (seconds, action) pairs run in a worker thread at those offsets (kill Redis, flip a fault
    switch…). The client gives each request 3 s; no answer by then is recorded as status 0.

    The generator must not add pauses of its own to the latencies it records: the test process holds a large heap
    (torch, trained models, fixtures), and one full garbage collection of it stalled every request in flight by
    150–330 ms, about 4 s into the first load run of a session. Freezing the heap first leaves the collector only
    the objects this run creates.
    """
    gc.collect()
    gc.freeze()
    try:
        return await _run_load(base_url, make_request, seconds, rate, timeline, keep_body)
    finally:
        gc.unfreeze()


async def _run_load(
    base_url: str,
    make_request: RequestFactory,
    seconds: float,
    rate: float,
    timeline: Sequence[tuple[float, Callable[[], Any]]],
    keep_body: Callable[[str], bool],
) -> tuple[list[Sample], float]:
    samples: list[Sample] = []
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(base_url=base_url, timeout=3.0, limits=limits) as client:
        t0 = time.perf_counter()

        async def one(i: int) -> None:
            label, method, kwargs = make_request(i)
            sent = time.perf_counter()
            try:
                response = await client.request(method, **kwargs)
                latency = time.perf_counter() - sent
                body = response.json() if keep_body(label) and response.status_code < 300 else None
                samples.append(Sample(sent - t0, latency, response.status_code, label, body))
            except httpx.HTTPError as exc:
                samples.append(Sample(sent - t0, time.perf_counter() - sent, 0, label, None, repr(exc)))

        async def actions() -> None:
            for offset, action in sorted(timeline, key=lambda x: x[0]):
                delay = t0 + offset - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                await asyncio.to_thread(action)

        action_task = asyncio.create_task(actions())
        tasks = []
        n = int(seconds * rate)
        for i in range(n):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        await action_task
        duration = time.perf_counter() - t0
    samples.sort(key=lambda s: s.t)
    return samples, duration


def record(report: LoadReport) -> LoadReport:
    REPORTS.append(report)
    print(report.summary())
    return report


def combined_summary() -> str:
    if not REPORTS:
        return ""
    total = sum(r.total for r in REPORTS)
    available = sum(r.available for r in REPORTS)
    lines = [r.summary() for r in REPORTS]
    lines.append(
        f"[all fault runs] availability {available / total * 100:.3f} % ({available}/{total} requests "
        f"answered 2xx within {BUDGET_S * 1000:.0f} ms; target ≥ {MIN_AVAILABILITY * 100:.1f} %)"
    )
    return "\n".join(lines)
