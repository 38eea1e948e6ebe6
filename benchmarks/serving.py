"""Serving benchmark: the gateway under wrk on loopback, against a bare FastAPI ceiling measured in the same run.

    .venv/bin/python benchmarks/serving.py                      # set-up (synthetic 10k items) + every scenario
    .venv/bin/python benchmarks/serving.py --artifacts A --data D   # reuse trained models

Scenarios (each on a fresh server process, one uvicorn worker unless --workers):

1. ceiling      a bare FastAPI app, one GET route returning a fixed answer of the same JSON shape (orjson);
2. cached       GET /api/v1/recommendations for 200 known users, every answer already in the cache;
3. uncached     the same route with ``engine=transformer`` and the cache switched off (``cache.ttl_s = 0``),
                rotating over 2000 known users: every request runs the transformer;
4. paced        scenario 3 at a fixed 300 requests/s from an open-loop generator (latency measured from the
                intended send time, so a stall cannot hide behind it), for the p99.

wrk drives 1–3 (``-t1 -c32``); the load generator shares the machine, which is part of the measurement.
Every scenario reports errors (socket errors and non-2xx) and, for the gateway, which engine answered
(from /metrics), so a timeout-driven fallback to popularity cannot pass for transformer throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from provenance import provenance_lines, write_report

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
RECENGINE = [PY, "-m", "recengine.cli"]


# ---- the ceiling: a bare FastAPI endpoint with the gateway's response shape -----------------------------------
def _ceiling_app() -> Any:
    from fastapi import FastAPI
    from starlette.responses import Response

    payload = orjson.dumps(
        {
            "request_id": "0" * 32,
            "user_id": "u1",
            "engine": "transformer",
            "model_version": "20260101T000000000",
            "fallback": None,
            "cached": True,
            "items": [
                {"item_id": f"i{i}", "score": 1.0 / i, "rank": i, "title": f"Item {i}", "categories": ["c"]}
                for i in range(1, 11)
            ],
            "took_ms": 0.1,
        }
    )
    app = FastAPI()

    @app.get("/api/v1/recommendations")
    async def recommendations(user_id: str, k: int = 10) -> Response:
        return Response(payload, media_type="application/json")

    return app


# ---- processes -----------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout} s")


@contextmanager
def server(cmd: Sequence[str], ready_url: str, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(list(cmd), env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_ready(ready_url, proc)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# ---- wrk -----------------------------------------------------------------------------------------------------
@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    requests: int
    errors: int
    raw: str = field(repr=False, default="")


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def parse_wrk(out: str) -> WrkResult:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = {
        int(p): _ms(v, u)
        for p, v, u in re.findall(r"^\s+(50|90|99)(?:\.000)?%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.MULTILINE)
    }
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = 0
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        errors += sum(int(x) for x in sock.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))
    return WrkResult(rps, lat.get(50, 0.0), lat.get(90, 0.0), lat.get(99, 0.0), total, errors, out)


def lua_rotating(path: Path, urls: Sequence[str]) -> Path:
    """A wrk script that cycles through ``urls`` (paths with query strings)."""
    body = ",\n".join(f'  "{u}"' for u in urls)
    path.write_text(
        "local paths = {\n" + body + "\n}\nlocal i = 0\n"
        "request = function()\n  i = i % #paths + 1\n  return wrk.format('GET', paths[i])\nend\n"
    )
    return path


def run_wrk(base: str, script: Path, duration: int, connections: int) -> WrkResult:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), base]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return parse_wrk(out)


# ---- open-loop load at a fixed rate ----------------------------------------------------------------------------
@dataclass
class PacedResult:
    rate: float
    sent: int
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    achieved_rps: float


async def _paced(host: str, port: int, paths: Sequence[str], rate: float, seconds: float, conns: int) -> PacedResult:
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(conns):
        pool.put_nowait(await asyncio.open_connection(host, port))
    latencies: list[float] = []
    errors = 0
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    n = int(rate * seconds)

    async def one(i: int) -> None:
        nonlocal errors
        intended = start + i / rate
        reader, writer = await pool.get()
        try:
            path = paths[i % len(paths)]
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
            if status >= 300:
                errors += 1
        except (OSError, asyncio.IncompleteReadError, ValueError, AttributeError):
            errors += 1
            writer.close()
            reader, writer = await asyncio.open_connection(host, port)
        finally:
            pool.put_nowait((reader, writer))
        latencies.append((loop.time() - intended) * 1000.0)

    tasks = []
    for i in range(n):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    elapsed = loop.time() - start
    while not pool.empty():
        pool.get_nowait()[1].close()
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))]

    return PacedResult(rate, n, errors, pct(50), pct(90), pct(99), latencies[-1], n / elapsed)


# ---- metrics scraped from the gateway ------------------------------------------------------------------------
def answered_by(base: str) -> dict[str, float]:
    """Requests per answering engine on the recommendations route, from /metrics."""
    import httpx

    text = httpx.get(base + "/metrics", timeout=5).text
    out: dict[str, float] = {}
    for engine, status, value in re.findall(
        r'recengine_requests_total\{engine="(\w+)",route="/api/v1/recommendations",status="(\d+)"\} ([\d.e+]+)', text
    ):
        key = engine if status == "200" else f"{engine}:{status}"
        out[key] = out.get(key, 0.0) + float(value)
    fallbacks = sum(float(v) for v in re.findall(r"recengine_fallbacks_total\{[^}]*\} ([\d.e+]+)", text))
    out["fallbacks"] = fallbacks
    return out


# ---- set-up --------------------------------------------------------------------------------------------------
def setup(workdir: Path, items: int, users: int, epochs: int) -> tuple[Path, Path, str]:
    """Synthetic data set and trained models; returns (artifacts, data, the engine benchmarked uncached)."""
    data, artifacts = workdir / "data", workdir / "artifacts"
    env = {**os.environ, "RECENGINE_SERVING__ARTIFACTS_DIR": str(artifacts)}
    subprocess.run([*RECENGINE, "data", "synth", "-o", str(data), "--users", str(users), "--items", str(items)],
                   check=True, env=env)  # fmt: skip
    subprocess.run([*RECENGINE, "train", "--engine", "popularity", "--data", str(data)], check=True, env=env)
    engine = "transformer"
    done = subprocess.run(
        [*RECENGINE, "train", "--engine", "transformer", "--data", str(data), "--epochs", str(epochs)], env=env
    )
    if done.returncode != 0:
        print("transformer training failed: benchmarking popularity uncached instead", file=sys.stderr)
        engine = "popularity"
    return artifacts, data, engine


def known_users(data: Path, n: int) -> list[str]:
    from recengine.data.dataset import Dataset

    ds = Dataset.load(data)
    return ds.users.ids[1 : n + 1]


# ---- main ----------------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifacts", type=Path, help="Trained artifacts folder (default: train into a temp dir).")
    ap.add_argument("--data", type=Path, help="Processed data set the artifacts were trained on.")
    ap.add_argument("--engine", default=None, help="Engine for the uncached scenarios (default: transformer).")
    ap.add_argument("--items", type=int, default=11_000, help="Synthetic catalogue size for the set-up.")
    ap.add_argument("--users", type=int, default=4000)
    ap.add_argument("--epochs", type=int, default=1, help="Training epochs (serving speed does not depend on it).")
    ap.add_argument("--duration", type=int, default=4, help="Seconds per wrk run.")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=7, help="Alternating wrk rounds per scenario; medians are reported.")
    ap.add_argument("--rate", type=float, default=300.0)
    ap.add_argument("--paced-seconds", type=float, default=20.0)
    ap.add_argument("--workers", type=int, default=1, help="uvicorn workers for the gateway and the ceiling.")
    ap.add_argument("--redis-url", default=None, help="Also measure the cached route with the Redis cache.")
    ap.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "serving.md")
    args = ap.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2

    workdir = Path(tempfile.mkdtemp(prefix="recengine-bench-"))
    if args.artifacts is None:
        artifacts, data, engine = setup(workdir, args.items, args.users, args.epochs)
    else:
        artifacts, data, engine = args.artifacts, args.data, args.engine or "transformer"
    engine = args.engine or engine
    users = known_users(data, 2000)
    from recengine.engines import load_engine
    from recengine.engines.artifact import current_dir

    model_dir = current_dir(artifacts, engine)
    assert model_dir is not None, f"no {engine} model in {artifacts}"
    n_items = load_engine(model_dir).n_items
    load_before = os.getloadavg()

    base_env = {
        **os.environ,
        "RECENGINE_SERVING__ARTIFACTS_DIR": str(artifacts),
        "RECENGINE_SERVING__EVENTS_DB": str(workdir / "events.sqlite3"),
        "RECENGINE_SERVING__WORKERS": str(args.workers),
        "RECENGINE_DATA__DIR": str(data),
        "RECENGINE_OBSERVABILITY__LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT / "benchmarks") + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    results: dict[str, Any] = {}
    cached_paths = [f"/api/v1/recommendations?user_id={u}&k=10" for u in users[:200]]
    uncached_paths = [f"/api/v1/recommendations?user_id={u}&k=10&engine={engine}" for u in users]
    script = lua_rotating(workdir / "cached.lua", cached_paths)
    script_u = lua_rotating(workdir / "uncached.lua", uncached_paths)
    names = ("ceiling", "cached", "uncached", *(("cached_redis",) if args.redis_url else ()))
    ports = {name: free_port() for name in names}
    bases = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    ceiling_cmd = [PY, "-m", "uvicorn", "serving:_ceiling_app", "--factory", "--port", str(ports["ceiling"]),
                   "--workers", str(args.workers), "--log-level", "warning", "--no-access-log"]  # fmt: skip

    def serve(name: str) -> list[str]:
        return [*RECENGINE, "serve", "--port", str(ports[name]), "--workers", str(args.workers)]

    # Uncached: the cache is off, and the time budget is generous so that an overloaded engine is measured,
    # not replaced by the popularity floor (answered_by shows whether that happened anyway).
    env_u = {**base_env, "RECENGINE_CACHE__TTL_S": "0", "RECENGINE_SERVING__ENGINE_TIMEOUT_MS": "2000"}
    # All three servers run side by side and the rounds alternate, so that the load other work puts on the
    # shared cores falls on every scenario alike.
    env_r = {**base_env, "RECENGINE_CACHE__REDIS_URL": args.redis_url or ""}
    with contextlib.ExitStack() as stack:
        stack.enter_context(server(ceiling_cmd, bases["ceiling"] + "/api/v1/recommendations?user_id=u", base_env))
        stack.enter_context(server(serve("cached"), bases["cached"] + "/ready", base_env))
        stack.enter_context(server(serve("uncached"), bases["uncached"] + "/ready", env_u))
        if args.redis_url:
            stack.enter_context(server(serve("cached_redis"), bases["cached_redis"] + "/ready", env_r))
        run_wrk(bases["ceiling"], script, 2, args.connections)
        run_wrk(bases["uncached"], script_u, 3, args.connections)
        scripts = {"ceiling": script, "cached": script, "uncached": script_u, "cached_redis": script}
        for name in names[1:]:
            if name != "uncached":
                run_wrk(bases[name], script, 3, args.connections)  # fills the cache
        rounds: dict[str, list[WrkResult]] = {name: [] for name in names}
        for _ in range(args.rounds):
            for name in names:
                rounds[name].append(run_wrk(bases[name], scripts[name], args.duration, args.connections))
        for name, runs in rounds.items():
            results[name] = sorted(runs, key=lambda w: w.rps)[len(runs) // 2]  # the median round
            results[name + "_rounds"] = [w.rps for w in runs]
        results["cached_engines"] = answered_by(bases["cached"])
        if args.redis_url:
            results["cached_redis_engines"] = answered_by(bases["cached_redis"])
        results["uncached_engines"] = answered_by(bases["uncached"])
        # The same paced load on the bare ceiling: the latency floor this machine allows right now.
        results["paced_ceiling"] = asyncio.run(
            _paced("127.0.0.1", ports["ceiling"], cached_paths, args.rate, args.paced_seconds, conns=16)
        )
        results["paced"] = asyncio.run(
            _paced("127.0.0.1", ports["uncached"], uncached_paths, args.rate, args.paced_seconds, conns=16)
        )
        after = answered_by(bases["uncached"])
        results["paced_engines"] = {k: v - results["uncached_engines"].get(k, 0.0) for k, v in after.items()}

    load_after = os.getloadavg()
    report = render(args, results, engine, n_items, load_before, load_after)
    print(write_report(args.output, report))
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


def render(
    args: argparse.Namespace,
    r: dict[str, Any],
    engine: str,
    n_items: int,
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
) -> str:
    ceiling, cached, uncached, paced = r["ceiling"], r["cached"], r["uncached"], r["paced"]
    # Paired: each cached round against the ceiling round just before it, so that a change in the background
    # load between rounds does not masquerade as a difference between the two.
    pairs = [c / x for c, x in zip(r["cached_rounds"], r["ceiling_rounds"], strict=True) if x]
    share = sorted(pairs)[len(pairs) // 2] if pairs else 0.0

    def engines(d: dict[str, float]) -> str:
        return ", ".join(f"{k}={int(v)}" for k, v in sorted(d.items()))

    rows = [
        ("bare FastAPI ceiling", ceiling, "—"),
        ("cached GET /api/v1/recommendations", cached, engines(r["cached_engines"])),
        (f"uncached, engine={engine}, cache off", uncached, engines(r["uncached_engines"])),
    ]
    if "cached_redis" in r:
        rows.insert(
            2, ("cached GET, Redis cache + Redis histories", r["cached_redis"], engines(r["cached_redis_engines"]))
        )
    lines = [
        "# Serving benchmark",
        "",
        *provenance_lines(f".venv/bin/python benchmarks/serving.py {' '.join(sys.argv[1:])}"),
        f"- load: wrk -t1 -c{args.connections} -d{args.duration}s on loopback (same machine), {args.rounds} "
        "alternating rounds per scenario, median shown; "
        f"paced: open-loop {args.rate:g} req/s for {args.paced_seconds:g} s over 16 connections",
        f"- gateway: `recengine serve`, {args.workers} uvicorn worker(s), metrics on, log level WARNING, "
        "uncached runs with cache.ttl_s = 0 and serving.engine_timeout_ms = 2000; "
        f"catalogue {n_items} items; uncached engine: {engine}",
        f"- load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} "
        "(the 2 cores are shared with other work: figures are noisy, compare within one run)",
        "",
        "| scenario | req/s | p50 ms | p90 ms | p99 ms | requests | errors | answered by (/metrics) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, w, by in rows:
        lines.append(
            f"| {name} | {w.rps:,.0f} | {w.p50_ms:.2f} | {w.p90_ms:.2f} | {w.p99_ms:.2f} | {w.requests:,} | "
            f"{w.errors} | {by} |"
        )
    pc = r["paced_ceiling"]
    lines.append(
        f"| paced {pc.rate:g} req/s, bare FastAPI ceiling (latency floor) | {pc.achieved_rps:,.0f} | "
        f"{pc.p50_ms:.2f} | {pc.p90_ms:.2f} | {pc.p99_ms:.2f} | {pc.sent:,} | {pc.errors} | — |"
    )
    lines.append(
        f"| paced {paced.rate:g} req/s, engine={engine}, cache off | {paced.achieved_rps:,.0f} | "
        f"{paced.p50_ms:.2f} | {paced.p90_ms:.2f} | {paced.p99_ms:.2f} | {paced.sent:,} | {paced.errors} | "
        f"{engines(r['paced_engines'])} |"
    )
    ok_cached = share >= 0.5 and cached.errors == 0
    ok_uncached = uncached.rps >= 800 and uncached.errors == 0
    ok_paced = paced.p99_ms <= 25 and paced.errors == 0
    lines += [
        "",
        "req/s of every round (the table shows the median round): "
        + "; ".join(
            f"{k}: {', '.join(f'{x:,.0f}' for x in r[k + '_rounds'])}"
            for k in ("ceiling", "cached", "cached_redis", "uncached")
            if k + "_rounds" in r
        ),
        "",
        "Targets:",
        f"- cached ≥ 50 % of the ceiling: median of the per-round ratios {share:.0%} "
        f"(rounds: {', '.join(f'{p:.0%}' for p in pairs)}) → {'met' if ok_cached else 'NOT met'}",
        f"- uncached ≥ 800 req/s with zero errors: {uncached.rps:,.0f} req/s, {uncached.errors} errors → "
        f"{'met' if ok_uncached else 'NOT met'}",
        f"- p99 ≤ 25 ms at {paced.rate:g} req/s: p99 {paced.p99_ms:.2f} ms (max {paced.max_ms:.1f} ms), "
        f"{paced.errors} errors → {'met' if ok_paced else 'NOT met'} (the bare ceiling's p99 at the same rate: "
        f"{pc.p99_ms:.2f} ms)",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
