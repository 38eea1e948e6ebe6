"""Cost curves: how time and memory grow with interactions, users and items (issue 19).

    python benchmarks/scale.py                                    # every part at the default sizes
    python benchmarks/scale.py --parts redis ingest --sizes 100k 1m
    python benchmarks/scale.py --parts prepare epoch --sizes 100k 1m 10m

Data comes from the project's own generator (``recengine.data.synthetic``) at each size, written once as parquet
under ``--workdir`` and reused. Every measurement of a part at a size runs in a fresh process, so its peak RSS (max
resident memory) is its own; figures go to ``benchmarks/results/scale.md`` with PNG plots beside it.

Parts:
- ``prepare``: ``recengine data prepare`` of the raw parquet (read, validate, transform, split, write): wall time,
  peak RSS, input rows/s.
- ``epoch``: one training epoch (its validation included) of the transformer and of the neural engine with the
  shipped settings (sampled softmax above ``--full-softmax-items``, as a user would configure a large catalogue),
  and EASE's fit where ``engines.ease.max_items`` allows it (the refusal message where it does not); then full-ranking
  evaluation time per 1,000 test users of each trained engine.
- ``redis``: Redis memory per million users' live histories at the default history length, and per million cached
  answers (k = 10), read from ``INFO memory`` before and after writing through the project's own stores.
- ``ingest``: events acknowledged durably per second, SQLite (``synchronous=FULL``) and the Redis stream (the script
  starts its own redis-server with ``appendonly yes, appendfsync always``), in batches, then every event counted
  back (zero loss).

Growth: for each curve over interaction counts at a fixed catalogue, the exponent b of time ∝ size^b (least squares
on log–log). Serving latency per catalogue size is measured by ``benchmarks/serving.py --items N`` and ANN recall
at 1M items by ``benchmarks/ann.py`` (see their results files).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from child import child_result
from provenance import ROOT, provenance_lines, write_report

PY = sys.executable
RECENGINE = str(Path(PY).with_name("recengine"))
#: label → (interactions, items). Users = interactions / 20 (the generator's mean history length). Not every
#: combination: interactions grow ×10 at a 10k catalogue (the training curves), and the catalogue grows ×10 at 1M
#: interactions (what item count costs); 10M × 1M items is past dense anything on one machine.
SIZES: dict[str, tuple[int, int]] = {
    "100k": (100_000, 10_000),
    "1m": (1_000_000, 10_000),
    "1m-100k-items": (1_000_000, 100_000),
    "10m": (10_000_000, 10_000),
}
PARTS = ("prepare", "epoch", "redis", "ingest")
MEAN_LENGTH = 20.0


def rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


# ---- data ------------------------------------------------------------------------------------------------------
def raw_data(workdir: Path, label: str) -> Path:
    """The raw synthetic interactions (and items) of one size, generated once."""
    out = workdir / f"raw-{label}"
    if (out / "interactions.parquet").is_file():
        return out
    from recengine.data.synthetic import SynthConfig, generate

    n, items = SIZES[label]
    inter, meta = generate(SynthConfig(n_users=max(1, round(n / MEAN_LENGTH)), n_items=items, mean_length=MEAN_LENGTH))
    out.mkdir(parents=True, exist_ok=True)
    inter.write_parquet(out / "interactions.parquet")
    meta.write_parquet(out / "items.parquet")
    return out


def prepared(workdir: Path, label: str) -> Path:
    out = workdir / f"data-{label}"
    if not (out / "interactions.parquet").is_file():
        raw = raw_data(workdir, label)
        cmd = [RECENGINE, "data", "prepare", str(raw / "interactions.parquet"), "--items", str(raw / "items.parquet")]
        subprocess.run([*cmd, "-o", str(out)], check=True, capture_output=True)
    return out


# ---- parts (each runs in its own child process) ------------------------------------------------------------------
def part_prepare(workdir: Path, label: str) -> list[dict[str, Any]]:
    raw = raw_data(workdir, label)
    out = Path(tempfile.mkdtemp(dir=workdir))
    cmd = [RECENGINE, "data", "prepare", str(raw / "interactions.parquet"), "--items", str(raw / "items.parquet")]
    t0 = time.perf_counter()
    subprocess.run([*cmd, "-o", str(out)], check=True, capture_output=True)
    seconds = time.perf_counter() - t0
    shutil.rmtree(out)
    n = SIZES[label][0]
    child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    return [
        {
            "part": "prepare",
            "what": "data prepare",
            "seconds": seconds,
            "peak_rss_gb": child_rss,
            "rate": n / seconds,
            "rate_unit": "rows/s",
        }
    ]


def part_epoch(workdir: Path, label: str, engine: str, full_softmax_items: int) -> list[dict[str, Any]]:
    from recengine.data.dataset import TRAIN, Dataset
    from recengine.errors import CatalogueTooLarge
    from recengine.evaluation import evaluate
    from recengine.settings import load_settings
    from recengine.training.run import fit

    settings = load_settings(None)
    dataset = Dataset.load(prepared(workdir, label))
    section = getattr(settings.engines, engine)
    if engine == "transformer" and dataset.n_items > full_softmax_items:
        section = section.model_copy(update={"loss": "sampled_softmax", "ahead": 1})
    if engine == "neural":
        section = section.model_copy(update={"full_softmax_items": full_softmax_items})
    training = settings.training.with_overrides(epochs=1)
    t0 = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            trained = fit(engine, dataset, section, training, Path(tmp))
    except CatalogueTooLarge as exc:
        return [{"part": "epoch", "what": f"{engine} fit", "refused": str(exc)}]
    seconds = time.perf_counter() - t0
    per_epoch = trained.metrics.get("seconds_per_epoch", seconds)
    targets = int((dataset.split == TRAIN).sum())
    rows: list[dict[str, Any]] = [
        {
            "part": "epoch",
            "what": f"{engine} {'fit' if engine == 'ease' else 'epoch'}",
            "seconds": per_epoch if engine != "ease" else seconds,
            "peak_rss_gb": rss_gb(),
            "rate": targets / (per_epoch if engine != "ease" else seconds),
            "rate_unit": "training interactions/s",
            "note": f"loss={section.loss}" if engine == "transformer" else "",
        }
    ]
    users = 2000
    t0 = time.perf_counter()
    metrics = evaluate(trained.score, dataset, split="test", ks=(10,), max_users=users)
    ev = time.perf_counter() - t0
    rows.append(
        {
            "part": "eval",
            "what": f"{engine} eval / 1k users",
            "seconds": ev / metrics["n_users"] * 1000,
            "peak_rss_gb": rss_gb(),
            "rate": metrics["n_users"] / ev,
            "rate_unit": "users/s",
        }
    )
    return rows


async def _redis_memory(url: str, label: str) -> list[dict[str, Any]]:
    from redis.asyncio import Redis

    from recengine.serving.cache import RedisCache, cache_key, params_hash
    from recengine.serving.history import RedisHistoryStore
    from recengine.serving.types import encode_payload
    from recengine.settings import load_settings

    n_users = {"100k": 5_000, "1m": 20_000}.get(label, 20_000)
    max_len = load_settings(None).serving.history_max_len
    client = Redis.from_url(url)
    await client.flushdb()
    rng = np.random.default_rng(0)

    async def used() -> int:
        info = await client.info("memory")
        return int(info["used_memory"])

    store = RedisHistoryStore(client, max_len=max_len)
    rows = []
    # Item ids as strings ("i12345") and as digits ("12345", as MovieLens and Amazon ids are): Redis keeps a list
    # entry that reads as an integer in a few bytes.
    for kind, fmt in (("string ids", "i{}"), ("numeric ids", "{}")):
        before = await used()
        for u in range(n_users):
            await store.append(f"user-{u:07d}", [fmt.format(x) for x in rng.integers(0, 100_000, size=max_len)])
        hist = (await used() - before) / n_users
        rows.append(
            {
                "part": "redis",
                "what": f"histories of {max_len} items, {kind}",
                "bytes_per_user": hist,
                "gib_per_million": hist * 1e6 / 2**30,
                "n": n_users,
            }
        )
        await client.flushdb()
    cache = RedisCache(client)
    before = await used()
    params = params_hash({"k": 10})
    for u in range(n_users):
        ranked = [
            {"item_id": f"i{x}", "score": float(s), "rank": r + 1}
            for r, (x, s) in enumerate(zip(rng.integers(0, 100_000, 10), np.sort(rng.random(10))[::-1], strict=True))
        ]
        key = cache_key("rec", "transformer", "20261204-000000", f"user-{u:07d}", f"abcd1234.r{u}", params)
        await cache.set(key, encode_payload("20261204-000000", ranked), 300.0)
    answers = (await used() - before) / n_users
    await client.flushdb()
    await client.aclose()
    return [
        *rows,
        {
            "part": "redis",
            "what": "cached answers (k=10)",
            "bytes_per_user": answers,
            "gib_per_million": answers * 1e6 / 2**30,
            "n": n_users,
        },
    ]


async def _ingest(url: str, workdir: Path, n: int, batch: int) -> list[dict[str, Any]]:
    from redis.asyncio import Redis

    from recengine.serving.events import Event, RedisStreamEventLog, SqliteEventLog

    def events(prefix: str) -> list[Event]:
        return [Event(f"{prefix}-{i}", f"u{i % 997}", f"i{i % 5003}", "view", 1.7e9 + i) for i in range(n)]

    rows = []
    path = workdir / f"ingest-{os.getpid()}.sqlite"
    logs: list[tuple[str, Any]] = [("SQLite (synchronous=FULL)", SqliteEventLog(path))]
    client = Redis.from_url(url)
    await client.flushdb()
    logs.append(("Redis stream (appendfsync always)", RedisStreamEventLog(client)))
    for name, log in logs:
        evs = events(name[:5])
        t0 = time.perf_counter()
        for i in range(0, n, batch):
            stored = await log.append(evs[i : i + batch])
            assert all(stored)
        seconds = time.perf_counter() - t0
        counted = await log.count()
        rows.append(
            {
                "part": "ingest",
                "what": f"{name}, batches of {batch}",
                "seconds": seconds,
                "rate": n / seconds,
                "rate_unit": "events/s",
                "lost": n - counted,
            }
        )
        await log.close()
    path.unlink(missing_ok=True)
    return rows


def run_part(args: list[str]) -> list[dict[str, Any]]:
    part, label, workdir = args[0], args[1], Path(args[2])
    if part == "prepare":
        return part_prepare(workdir, label)
    if part == "epoch":
        return part_epoch(workdir, label, args[3], int(args[4]))
    if part == "redis":
        return asyncio.run(_redis_memory(args[3], label))
    if part == "ingest":
        return asyncio.run(_ingest(args[3], workdir, int(args[4]), int(args[5])))
    raise SystemExit(f"unknown part {part}")


# ---- orchestration -----------------------------------------------------------------------------------------------
def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    if shutil.which("redis-server") is None:
        raise SystemExit("the redis and ingest parts need redis-server on PATH")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rdir = workdir / "redis"
    rdir.mkdir(exist_ok=True)
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(rdir),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(100):
        if subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).returncode == 0:
            break
        time.sleep(0.1)
    return proc, f"redis://127.0.0.1:{port}/0"


def exponent(points: list[tuple[float, float]]) -> float | None:
    """b of y ∝ x^b, least squares on log–log (None with fewer than two sizes)."""
    if len(points) < 2:
        return None
    x, y = np.log([p[0] for p in points]), np.log([p[1] for p in points])
    return float(np.polyfit(x, y, 1)[0])


def plot(rows: list[dict[str, Any]], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        if "seconds" in r and r.get("items") == 10_000 and r["part"] in ("prepare", "epoch", "eval"):
            curves.setdefault(r["what"], []).append((r["interactions"], r["seconds"]))
    if not curves:
        return []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for what, pts in sorted(curves.items()):
        pts.sort()
        ax.loglog([p[0] for p in pts], [p[1] for p in pts], marker="o", label=what)
    ax.set_xlabel("interactions (10k items)")
    ax.set_ylabel("seconds")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    png = out.with_name("scale-time.png")
    fig.savefig(png, dpi=110)
    return [f"![time against interactions]({png.name})"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    ap.add_argument("--sizes", nargs="+", default=["100k", "1m", "1m-100k-items"], choices=list(SIZES))
    ap.add_argument("--engines", nargs="+", default=["transformer", "neural", "ease"])
    ap.add_argument(
        "--full-softmax-items",
        type=int,
        default=20_000,
        help="Catalogues above this train with a sampled softmax (both sequence engines).",
    )
    ap.add_argument("--ingest-events", type=int, default=20_000)
    ap.add_argument("--ingest-batch", type=int, default=100)
    ap.add_argument("--workdir", type=Path, default=None, help="Where generated data is kept (default: a temp dir).")
    ap.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "scale.md")
    ap.add_argument("--one", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_part(args.one)))
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="recengine-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    redis = None
    rows: list[dict[str, Any]] = []
    try:
        if {"redis", "ingest"} & set(args.parts):
            redis, url = start_redis(workdir)
        for label in args.sizes:
            n, items = SIZES[label]
            jobs: list[list[str]] = []
            if "prepare" in args.parts:
                jobs.append(["prepare", label, str(workdir)])
            if "epoch" in args.parts:
                jobs += [["epoch", label, str(workdir), e, str(args.full_softmax_items)] for e in args.engines]
            if "redis" in args.parts and label == args.sizes[0]:
                jobs.append(["redis", label, str(workdir), url])
            if "ingest" in args.parts and label == args.sizes[0]:
                jobs.append(["ingest", label, str(workdir), url, str(args.ingest_events), str(args.ingest_batch)])
            for job in jobs:
                t0 = time.perf_counter()
                got: list[dict[str, Any]] = child_result(__file__, job)
                for r in got:
                    r.update(size=label, interactions=n, items=items)
                    print(
                        f"{label:>14} {r['what']}: "
                        + ", ".join(
                            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                            for k, v in r.items()
                            if k not in ("part", "what", "size")
                        ),
                        flush=True,
                    )
                rows += got
                print(f"{'':>14} ({job[0]} took {time.perf_counter() - t0:.0f} s)", flush=True)
    finally:
        if redis is not None:
            redis.terminate()
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    write(rows, args)


def write(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    lines = [
        "# Cost curves",
        "",
        *provenance_lines(f"python benchmarks/scale.py {' '.join(sys.argv[1:])}".strip()),
        "- synthetic data from `recengine.data.synthetic` (users = interactions / 20, the generator's mean length);"
        " each row a fresh process; peak RSS is that process's (for prepare: the CLI child's)",
        f"- training: shipped settings, one epoch with its validation; above {args.full_softmax_items} items the"
        " sequence engines train with a sampled softmax",
        "",
        "| size | interactions | items | what | seconds | peak RSS GB | rate | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["part"] in ("prepare", "epoch", "eval", "ingest"):
            if "refused" in r:
                lines.append(
                    f"| {r['size']} | {r['interactions']:,} | {r['items']:,} | {r['what']} | refused |"
                    f" — | — | {r['refused']} |"
                )
                continue
            rate = f"{r['rate']:,.0f} {r['rate_unit']}"
            note = r.get("note", "") or (f"lost {r['lost']}" if "lost" in r else "")
            rss = f"{r['peak_rss_gb']:.2f}" if "peak_rss_gb" in r else "—"
            lines.append(
                f"| {r['size']} | {r['interactions']:,} | {r['items']:,} | {r['what']} |"
                f" {r['seconds']:.2f} | {rss} | {rate} | {note} |"
            )
    mem = [r for r in rows if r["part"] == "redis"]
    if mem:
        lines += [
            "",
            "## Redis memory",
            "",
            "| what | bytes per user | GiB per million users | users written |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {r['what']} | {r['bytes_per_user']:,.0f} | {r['gib_per_million']:.2f} | {r['n']:,} |" for r in mem
        ]
    curves: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        if r["part"] in ("prepare", "epoch", "eval") and "seconds" in r and r["items"] == 10_000:
            curves.setdefault(r["what"], []).append((r["interactions"], r["seconds"]))
    fitted = {w: exponent(p) for w, p in curves.items()}
    if any(b is not None for b in fitted.values()):
        lines += [
            "",
            "## Growth with interactions (10k items): time ∝ size^b",
            "",
            "| what | b | sizes |",
            "|---|---|---|",
        ]
        lines += [
            f"| {w} | {b:.2f} | {len(curves[w])} |" for w, b in fitted.items() if b is not None and not math.isnan(b)
        ]
    lines += ["", *plot(rows, args.output)]
    print(write_report(args.output, "\n".join(lines) + "\n"))
    args.output.with_suffix(".json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
