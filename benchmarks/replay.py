"""Replay benchmark: does the learning loop pay? Online HR@10 / NDCG@10 of a running service fed the future.

    .venv/bin/python benchmarks/replay.py                       # Beauty and ML-100K ($RECENGINE_BENCH_DATA)
    .venv/bin/python benchmarks/replay.py --datasets ml-100k --engine transformer --retrain-every 5000 --epochs 30
    .venv/bin/python benchmarks/replay.py --quick               # synthetic data, EASE: does it run (~2 min)

Protocol. A data set's interactions are put on one global timeline and cut once: the first 80 % (``--train-share``)
become the base data set (prepared as ``recengine data prepare`` would: leave-one-out for model selection) on which
the models are trained; the rest is replayed in time order through a running ``recengine serve``. For each replayed
event of user *u*: score the top 10 the service last gave *u* (a hit when the event's item is in it; NDCG@10 =
1/log2(rank + 2)), then POST the event, then GET *u*'s next top 10. A user's first replayed event is scored against a
top 10 asked for just before it. Scenarios, each on a fresh server with its own copy of the trained models:

1. frozen         the model and the histories as trained: no event is posted (the answers never change);
2. histories      events are posted, so the served histories are real-time; the model stays frozen;
3. retrain        as 2, and every ``--retrain-every`` events ``recengine retrain --engine E`` runs beside the server
                  (merge the server's event log, gate, refit, move CURRENT; the server's poller loads the new version)
                  while the replay goes on — its wall time, the request rate while it runs and any failed request are
                  the cost of the loop;
4. popularity     as 2, answered by the popularity engine.

Timeline. Where the data set has timestamps they order it (ties in input order). Beauty ships sequences without
them: each interaction is then placed at its relative position in its user's sequence ((i + 0.5) / length), so the
cut gives every user the first ~80 % of their sequence and the replay interleaves all users' futures. Either way the
service sees synthetic timestamps (2001-09-09 + the global rank in seconds), which keeps the order and satisfies the
API's 2000–2099 range; the timeline used is printed in the results.

Figures go to ``benchmarks/results/replay.md`` (``--quick`` prints them and writes only with ``--output``), headed by
the provenance lines every benchmark writes. Never run in CI.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from provenance import provenance_lines, write_report

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
RECENGINE = [PY, "-m", "recengine.cli"]
T0 = 1_000_000_000
"""The replay's first synthetic timestamp (2001-09-09): the API takes years 2000–2099 only."""
K = 10
SCENARIOS = ("frozen", "histories", "retrain", "popularity")


# ---- the timeline ------------------------------------------------------------------------------------------------
@dataclass
class Timeline:
    users: list[str]
    items: list[str]
    order: np.ndarray
    """Row indices in global time order."""
    mode: str
    """``timestamps`` or ``position`` (relative position in each user's sequence)."""


def timeline(dataset: Any, mode: str = "auto") -> Timeline:
    """Every interaction of ``dataset`` (all splits) in one global order."""
    user = np.asarray(dataset.user, dtype=np.int64)
    n = user.size
    if mode == "auto":
        fmt = str((dataset.manifest.get("source") or {}).get("format", ""))
        mode = "position" if fmt == "sequences" else "timestamps"
    row = np.arange(n)
    if mode == "timestamps":
        order = np.lexsort((row, np.asarray(dataset.timestamp, dtype=np.int64)))
    elif mode == "position":
        # Rows are sorted by user then time: a user's rows are contiguous, so positions come from the run starts.
        starts = np.r_[0, np.flatnonzero(np.diff(user)) + 1]
        lengths = np.diff(np.r_[starts, n])
        first = np.repeat(starts, lengths)
        position = (row - first + 0.5) / np.repeat(lengths, lengths)
        order = np.lexsort((user, position))
    else:
        raise ValueError(f"--time must be auto, timestamps or position, got {mode!r}")
    users = dataset.users.ids
    items = dataset.items.ids.ids
    return Timeline([users[u] for u in user], [items[i] for i in dataset.item], order, mode)


def cut(tl: Timeline, share: float) -> tuple[list[tuple[str, str, int]], list[tuple[str, str, int]]]:
    """(base rows, replayed events) as (user, item, synthetic timestamp), every base row before every replayed one."""
    rows = [(tl.users[r], tl.items[r], T0 + rank) for rank, r in enumerate(tl.order.tolist())]
    n_base = int(len(rows) * share)
    return rows[:n_base], rows[n_base:]


# ---- online metrics ----------------------------------------------------------------------------------------------
def score(top: Sequence[str], item: str) -> tuple[float, float]:
    """(hit, NDCG) of ``item`` against a top-``K`` list."""
    top = list(top)[:K]
    if item not in top:
        return 0.0, 0.0
    return 1.0, float(1.0 / np.log2(top.index(item) + 2))


def rate_within(stamps: Sequence[float], windows: Sequence[tuple[float, float]]) -> tuple[float, int]:
    """Requests per second completed inside ``windows`` (retraining runs), and how many."""
    total = sum(max(0.0, b - a) for a, b in windows)
    inside = sum(1 for t in stamps if any(a <= t <= b for a, b in windows))
    return (inside / total if total > 0 else 0.0), inside


@dataclass
class Result:
    scenario: str
    predictions: int = 0
    hits: float = 0.0
    ndcg: float = 0.0
    requests: int = 0
    failed: int = 0
    fallbacks: int = 0
    seconds: float = 0.0
    started: float = 0.0
    stamps: list[float] = field(default_factory=list, repr=False)
    retrains: list[dict[str, Any]] = field(default_factory=list)

    @property
    def hr(self) -> float:
        return self.hits / self.predictions if self.predictions else 0.0

    @property
    def ndcg10(self) -> float:
        return self.ndcg / self.predictions if self.predictions else 0.0


# ---- a server and the replay -------------------------------------------------------------------------------------
def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, env: dict[str, str], port: int) -> None:
        self.proc = subprocess.Popen(
            [*RECENGINE, "serve", "--port", str(port), "--workers", "1"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.base = f"http://127.0.0.1:{port}"

    def wait(self, timeout: float = 180) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            try:
                if httpx.get(self.base + "/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{self.base} not ready after {timeout} s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


class Retrainer:
    """Runs ``recengine retrain`` in the background, one at a time; a run due while one is going is skipped."""

    def __init__(self, cmd: list[str], env: dict[str, str]) -> None:
        self.cmd, self.env = cmd, env
        self.runs: list[dict[str, Any]] = []
        self.skipped = 0
        self._thread: threading.Thread | None = None

    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, at_event: int) -> None:
        if self.busy():
            self.skipped += 1
            return

        def go() -> None:
            started = time.time()
            done = subprocess.run(self.cmd, env=self.env, cwd=ROOT, capture_output=True, text=True)
            out = done.stdout + done.stderr
            self.runs.append(
                {
                    "at_event": at_event,
                    "start": started,
                    "end": time.time(),
                    "rc": done.returncode,
                    "outcome": "promoted" if done.returncode == 0 and "promoted" in out else
                    "refused" if done.returncode == 3 else "skipped" if done.returncode == 0 else "failed",
                    "tail": out.strip().splitlines()[-1:] if done.returncode not in (0, 3) else [],
                }
            )  # fmt: skip

        self._thread = threading.Thread(target=go, daemon=True)
        self._thread.start()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()


def replay(
    server: Server,
    events: Sequence[tuple[str, str, int]],
    scenario: str,
    engine: str,
    retrainer: Retrainer | None = None,
    every: int = 0,
) -> Result:
    import httpx

    result = Result(scenario)
    post = scenario != "frozen"
    asked = "popularity" if scenario == "popularity" else engine
    last: dict[str, list[str]] = {}
    started = time.time()
    with httpx.Client(base_url=server.base, timeout=30) as client:

        def ask(user: str) -> list[str]:
            result.requests += 1
            try:
                r = client.get("/api/v1/recommendations", params={"user_id": user, "k": K, "engine": asked})
            except httpx.HTTPError:
                result.failed += 1
                return []
            finally:
                result.stamps.append(time.time())
            if r.status_code != 200:
                result.failed += 1
                return []
            body = r.json()
            if body.get("fallback"):
                result.fallbacks += 1
            return [it["item_id"] for it in body["items"]]

        for n, (user, item, ts) in enumerate(events, start=1):
            top = last[user] if user in last else ask(user)
            hit, gain = score(top, item)
            result.predictions += 1
            result.hits += hit
            result.ndcg += gain
            if post:
                result.requests += 1
                try:
                    r = client.post(
                        "/api/v1/events",
                        json={"user_id": user, "item_id": item, "timestamp": ts, "event_id": f"replay-{n}"},
                    )
                    if r.status_code not in (200, 201, 202):
                        result.failed += 1
                except httpx.HTTPError:
                    result.failed += 1
                finally:
                    result.stamps.append(time.time())
            last[user] = ask(user)
            if retrainer is not None and every and n % every == 0:
                retrainer.start(n)
    result.started = started
    result.seconds = time.time() - started
    if retrainer is not None:
        retrainer.join()
        result.retrains = retrainer.runs
    return result


# ---- set-up ------------------------------------------------------------------------------------------------------
def prepare(dataset: Any, work: Path, share: float, mode: str) -> tuple[Path, list[tuple[str, str, int]], str]:
    """The base data set on disk and the events to replay."""
    import polars as pl

    from recengine.data.transforms import PrepareOptions, build_dataset
    from recengine.data.vocab import catalog_table

    tl = timeline(dataset, mode)
    base_rows, events = cut(tl, share)
    raw = pl.DataFrame(
        {
            "user": [r[0] for r in base_rows],
            "item": [r[1] for r in base_rows],
            "timestamp": np.asarray([r[2] for r in base_rows], dtype=np.int64),
        }
    )
    meta = catalog_table(dataset.items)
    base = build_dataset(raw, meta if meta.width > 1 else None, PrepareOptions(source={"replay_base": share}))
    base.save(work / "base")
    return work / "base", events, tl.mode


def train(base: Path, models: Path, engine: str, env: dict[str, str], epochs: int | None) -> None:
    env = {**env, "RECENGINE_SERVING__ARTIFACTS_DIR": str(models)}
    for name in dict.fromkeys(["popularity", engine]):
        cmd = [*RECENGINE, "train", "--engine", name, "--data", str(base)]
        if epochs is not None and name in ("transformer", "neural"):
            cmd += ["--epochs", str(epochs)]
        subprocess.run(cmd, env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def run_dataset(name: str, dataset: Any, args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"recengine-replay-{name}-"))
    base, events, mode = prepare(dataset, work, args.train_share, args.time)
    if args.max_events is not None:
        events = events[: args.max_events]
    from recengine.data.dataset import Dataset

    base_ds = Dataset.load(base)
    train_start = time.time()
    train(base, work / "models", args.engine, env, args.epochs)
    train_seconds = time.time() - train_start
    results: dict[str, Result] = {}
    for scenario in args.scenarios:
        art = work / f"art-{scenario}"
        shutil.copytree(work / "models", art)
        senv = {
            **env,
            "RECENGINE_SERVING__ARTIFACTS_DIR": str(art),
            "RECENGINE_SERVING__EVENTS_DB": str(work / f"events-{scenario}.sqlite3"),
            "RECENGINE_DATA__DIR": str(base),
            "RECENGINE_SERVING__RELOAD_POLL_S": "1",
            # Measure the engine, not the fallback: a loaded machine must not turn answers into popularity ones.
            "RECENGINE_SERVING__ENGINE_TIMEOUT_MS": "2000",
        }
        server = Server(senv, free_port())
        try:
            server.wait()
            retrainer = None
            if scenario == "retrain":
                cmd = [*RECENGINE, "retrain", "--engine", args.engine]
                if args.epochs is not None:
                    cmd += ["--epochs", str(args.epochs)]
                renv = {**senv, "RECENGINE_OBSERVABILITY__LOG_LEVEL": "WARNING"}
                if args.train_threads is not None:
                    renv["RECENGINE_TRAINING__NUM_THREADS"] = str(args.train_threads)
                retrainer = Retrainer(cmd, renv)
            results[scenario] = replay(server, events, scenario, args.engine, retrainer, args.retrain_every)
            if retrainer is not None:
                results[scenario].retrains = retrainer.runs
                results[scenario].retrains.append({"skipped_due": retrainer.skipped})
        finally:
            server.stop()
    known = set(base_ds.users.ids[1:])
    shutil.rmtree(work, ignore_errors=True)
    return {
        "name": name,
        "mode": mode,
        "n_base": base_ds.n_interactions,
        "n_events": len(events),
        "n_users_new": len({u for u, _, _ in events} - known),
        "train_seconds": train_seconds,
        "results": results,
    }


def load(name: str, args: argparse.Namespace) -> Any:
    if name == "synthetic":
        from recengine.data.synthetic import SynthConfig, generate
        from recengine.data.transforms import PrepareOptions, build_dataset

        raw, meta = generate(SynthConfig(n_users=args.synth_users, n_items=args.synth_items, seed=3))
        return build_dataset(raw, meta, PrepareOptions(source={"kind": "synthetic"}))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from quality import load_dataset

    return load_dataset(name)


# ---- the report --------------------------------------------------------------------------------------------------
def render(runs: Sequence[dict[str, Any]], args: argparse.Namespace, command: str) -> str:
    lines = [
        "# Replay benchmark: the learning loop, online",
        "",
        *provenance_lines(command, threads=args.train_threads),
        f"- protocol: global time cut at {args.train_share:.0%}; the rest replayed in time order through "
        "`recengine serve` (1 worker, serving.engine_timeout_ms = 2000); "
        f"engine {args.engine}; retraining every {args.retrain_every} events with "
        f"`recengine retrain --engine {args.engine}`"
        + (f" (--epochs {args.epochs})" if args.epochs is not None else "")
        + "; online HR@10 / NDCG@10 of the top 10 the service gave each user before the user's next event",
        "",
    ]
    for run in runs:
        res: dict[str, Result] = run["results"]
        lines += [
            f"## {run['name']}",
            "",
            f"Timeline: {run['mode']}; base {run['n_base']:,} interactions (trained once, {run['train_seconds']:.0f} s "
            f"for popularity + {args.engine}); {run['n_events']:,} events replayed, from "
            f"{run['n_users_new']:,} users the base does not know.",
            "",
            "| scenario | predictions | HR@10 | NDCG@10 | requests | failed | fallbacks | req/s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name in SCENARIOS:
            if name not in res:
                continue
            r = res[name]
            rps = r.requests / r.seconds if r.seconds else 0.0
            lines.append(
                f"| {name} | {r.predictions:,} | {r.hr:.4f} | {r.ndcg10:.4f} | {r.requests:,} | {r.failed} | "
                f"{r.fallbacks} | {rps:,.0f} |"
            )
        lines.append("")
        if "retrain" in res:
            r = res["retrain"]
            runs_ = [x for x in r.retrains if "start" in x]
            skipped = next((x["skipped_due"] for x in r.retrains if "skipped_due" in x), 0)
            # Clipped to the replay: a run still going when the last event was replayed is cut there.
            end = r.started + r.seconds
            windows = [(x["start"], min(x["end"], end)) for x in runs_ if x["start"] < end]
            during, n_during = rate_within(r.stamps, windows)
            outside_n = len(r.stamps) - n_during
            outside_s = r.seconds - sum(b - a for a, b in windows)
            walls = [x["end"] - x["start"] for x in runs_]
            outcomes = {
                o: sum(1 for x in runs_ if x["outcome"] == o) for o in ("promoted", "refused", "skipped", "failed")
            }
            lines += [
                f"Retraining: {len(runs_)} runs ({', '.join(f'{k} {v}' for k, v in outcomes.items())}; "
                f"{skipped} due while one was still running, skipped); wall time per run "
                + (f"median {np.median(walls):.1f} s, max {max(walls):.1f} s" if walls else "—")
                + f"; requests/s while retraining {during:,.0f} vs "
                f"{outside_n / outside_s if outside_s > 0 else 0:,.0f} otherwise; failed requests {r.failed}.",
            ]
            for x in runs_:
                if x["outcome"] == "failed":
                    lines.append(f"- run at event {x['at_event']} failed (exit {x['rc']}): {' '.join(x['tail'])}")
            if "frozen" in res and res["frozen"].predictions:
                f = res["frozen"]
                gain = r.hr - f.hr
                lines.append(
                    f"Loop vs frozen: HR@10 {r.hr:.4f} vs {f.hr:.4f} ({gain:+.4f}, "
                    f"{(gain / f.hr if f.hr else 0):+.0%}); NDCG@10 {r.ndcg10:.4f} vs {f.ndcg10:.4f} "
                    f"({r.ndcg10 - f.ndcg10:+.4f})."
                )
            lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["beauty", "ml-100k"], help="beauty, ml-100k, synthetic")
    ap.add_argument("--engine", default=None, help="Engine served and retrained (default transformer; quick: ease).")
    ap.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=SCENARIOS)
    ap.add_argument("--train-share", type=float, default=0.8)
    ap.add_argument("--time", default="auto", choices=["auto", "timestamps", "position"])
    ap.add_argument("--retrain-every", type=int, default=5000, help="Events between two retraining runs.")
    ap.add_argument("--epochs", type=int, default=None, help="training.epochs for train and retrain.")
    ap.add_argument("--train-threads", type=int, default=None, help="training.num_threads of the retraining runs.")
    ap.add_argument("--max-events", type=int, default=None, help="Replay at most this many events.")
    ap.add_argument("--quick", action="store_true", help="Synthetic data and a tiny model: a check that it runs.")
    ap.add_argument("--synth-users", type=int, default=400)
    ap.add_argument("--synth-items", type=int, default=150)
    ap.add_argument("--output", type=Path, default=None)
    args = ap.parse_args(argv)
    env = {
        **os.environ,
        "RECENGINE_OBSERVABILITY__LOG_LEVEL": "WARNING",
        "RECENGINE_TRAINING__ACCELERATOR": os.environ.get("RECENGINE_TRAINING__ACCELERATOR", "cpu"),
        "MLFLOW_ALLOW_FILE_STORE": "true",
    }
    if args.quick:
        args.datasets = ["synthetic"]
        args.engine = args.engine or "ease"  # closed form: seconds to retrain, and strong on small data
        args.epochs = args.epochs or 3
        args.retrain_every = min(args.retrain_every, 150)
        args.max_events = args.max_events or 450
        args.train_threads = args.train_threads or 1
        env.update(
            {
                "RECENGINE_ENGINES__TRANSFORMER__D_MODEL": "16",
                "RECENGINE_ENGINES__TRANSFORMER__N_LAYERS": "1",
                "RECENGINE_ENGINES__TRANSFORMER__MAX_LEN": "20",
                "RECENGINE_ENGINES__NEURAL__D_MODEL": "16",
                "RECENGINE_TRAINING__PROMOTION_TOLERANCE": "0.01",
            }
        )
    args.engine = args.engine or "transformer"
    output = args.output or (None if args.quick else ROOT / "benchmarks" / "results" / "replay.md")
    runs = [run_dataset(name, load(name, args), args, env) for name in args.datasets]
    report = render(
        runs, args, f".venv/bin/python benchmarks/replay.py {' '.join(sys.argv[1:] if argv is None else argv)}"
    )
    print(write_report(output, report) if output is not None else report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
