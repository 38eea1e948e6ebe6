"""Converged peers, side by side: a peer library's SASRec trained on our split, scored by our evaluator.

    python benchmarks/peers/run.py --peer rectools --dataset ml-100k --seed 42
    python benchmarks/peers/run.py --peer recbole --dataset beauty --seed 42 --max-hours 6 --resume

Run with the project's environment (``PYTHONPATH=src:benchmarks`` or an installed recengine). Steps:

1. prepare the data set exactly as ``benchmarks/quality.py`` does (``load_dataset``: the same leave-one-out split);
2. export it to a neutral format in the work folder (``peerlib.py`` describes it): the training interactions with
   their time order, and the validation and test cases (user, history, target);
3. create the peer's own virtual environment if it is missing (``$RECENGINE_PEERS_HOME/<peer>``, default
   ``~/.cache/recengine-peers/<peer>``): ``python3 -m venv``, then the CPU ``torch`` first (so that pip does not pull
   a CUDA build), then the peer's pinned packages. Nothing is added to the project's own dependencies;
4. run the peer's script (``<peer>_peer.py``, which imports the peer's library, numpy and pandas, never recengine) in
   that environment: it trains epoch by epoch with the peer's documented SASRec settings, scores our validation
   targets after each epoch (NDCG@10, full ranking, history excluded), stops when that has not improved for
   ``--patience`` epochs, checkpoints every epoch (``--resume`` continues an interrupted or capped run), and writes the
   best epoch's top-100 lists for the valid and test users;
5. score those lists with ``recengine.evaluation.rank_metrics`` (a target's rank is its place in the list; outside
   the top 100 it is a miss) and write ``benchmarks/results/peers/<peer>-<dataset>-seed<S>.json`` and the table
   ``benchmarks/results/peers.md``.

A run that ended on ``--max-epochs`` or ``--max-hours`` before early stopping fired is labelled "capped: lower
bound", with its validation curve. ``--smoke`` marks a run that only proves the path (a few epochs): it is stored
as ``…-smoke.json`` and listed apart, never as a result. Never run in CI (reads ``$RECENGINE_BENCH_DATA``); the
tests use ``--peer fake`` on a small synthetic file with the current interpreter.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
ROOT = BENCH.parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from provenance import commit, provenance_lines, write_report  # noqa: E402

PEERS = ("rectools", "recbole", "fake")
DATASETS = ("beauty", "ml-100k")
TOP_K = 100
KS = (10, 20)
#: The CPU wheel, installed before anything else so that the peer's own requirement on torch is already met.
TORCH_PIN = "torch==2.13.0"
PINS: dict[str, list[str]] = {
    "rectools": ["rectools[torch]==0.19.*"],
    # RecBole 1.2.1 (2024) predates numpy 2 and pandas 3; its trainer imports these at module level.
    "recbole": ["recbole==1.2.1", "numpy<2", "pandas<3"],
    "fake": [],
}
#: Published reference points under the same protocol (full ranking, leave-one-out), from the issue.
PUBLISHED = [
    ("beauty", "SASRec, sampled softmax (eSASRec paper benchmark, RecSys 2025)", 0.0921, 0.0531),
    ("beauty", "eSASRec (RecSys 2025)", 0.0928, 0.0523),
    ("beauty", "BSARec (AAAI 2024)", 0.1008, 0.0611),
]


def peers_home() -> Path:
    return Path(os.environ.get("RECENGINE_PEERS_HOME", "~/.cache/recengine-peers")).expanduser()


def run_name(peer: str, dataset: str, seed: int, smoke: bool = False) -> str:
    return f"{peer}-{dataset}-seed{seed}" + ("-smoke" if smoke else "")


# ---- 2. export ------------------------------------------------------------------------------------------------------
def export_dataset(dataset: Any, data_dir: Path) -> dict[str, Any]:
    """Write the neutral export (see ``peerlib.py``); returns the meta written to ``meta.json``.

    Cases whose user has no history are left out, as ``recengine.evaluation.evaluate`` leaves them out.
    """
    from recengine.data.dataset import TRAIN

    data_dir.mkdir(parents=True, exist_ok=True)
    keep = dataset.split == TRAIN
    user = dataset.user[keep].astype(np.int64)
    # Rows are sorted by user, then in time order: a running index within each user is that order.
    starts = np.searchsorted(user, user, side="left")
    train = {
        "user": user,
        "item": dataset.item[keep].astype(np.int64),
        "timestamp": dataset.timestamp[keep].astype(np.int64),
        "position": (np.arange(len(user)) - starts).astype(np.int64),
    }
    np.savez_compressed(data_dir / "train.npz", **train)
    arrays: dict[str, np.ndarray] = {"n_items": np.asarray(dataset.n_items)}
    meta: dict[str, Any] = {
        "dataset_hash": dataset.content_hash,
        "n_items": int(dataset.n_items),
        "n_users": int(dataset.n_users),
        "n_train": len(user),
    }
    for split in ("valid", "test"):
        users, histories, targets = dataset.eval_cases(split)
        with_history = [i for i, h in enumerate(histories) if len(h)]
        meta[f"{split}_users_without_history"] = len(users) - len(with_history)
        meta[f"{split}_users"] = len(with_history)
        hs = [np.asarray(histories[i], dtype=np.int64) for i in with_history]
        ts = [np.asarray(targets[i], dtype=np.int64) for i in with_history]
        arrays[f"{split}_users"] = np.asarray(users, dtype=np.int64)[with_history]
        arrays[f"{split}_hist_items"] = np.concatenate(hs) if hs else np.zeros(0, np.int64)
        arrays[f"{split}_hist_offsets"] = np.concatenate([[0], np.cumsum([len(h) for h in hs])]).astype(np.int64)
        arrays[f"{split}_targets"] = np.concatenate(ts) if ts else np.zeros(0, np.int64)
        arrays[f"{split}_target_offsets"] = np.concatenate([[0], np.cumsum([len(t) for t in ts])]).astype(np.int64)
    np.savez_compressed(data_dir / "cases.npz", **arrays)
    (data_dir / "meta.json").write_text(json.dumps(meta, indent=1))
    return meta


def read_cases(data_dir: Path, split: str) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    with np.load(data_dir / "cases.npz") as z:
        users = z[f"{split}_users"]
        hist, hoff = z[f"{split}_hist_items"], z[f"{split}_hist_offsets"]
        tgt, toff = z[f"{split}_targets"], z[f"{split}_target_offsets"]
    histories = [hist[hoff[i] : hoff[i + 1]] for i in range(len(users))]
    targets = [tgt[toff[i] : toff[i + 1]] for i in range(len(users))]
    return users, histories, targets


# ---- 5. scoring -----------------------------------------------------------------------------------------------------
def check_lists(top: np.ndarray, histories: list[np.ndarray], n_items: int) -> None:
    """Refuse lists our protocol would not accept: unknown items, repeats, history items, padding inside a list."""
    if top.ndim != 2 or len(top) != len(histories):
        raise ValueError(f"lists have shape {top.shape}, expected ({len(histories)}, ≤{TOP_K})")
    if top.size and (top.min() < 0 or top.max() > n_items):
        raise ValueError(f"lists name items outside 1…{n_items}")
    for i, row in enumerate(top):
        real = row[row > 0]
        if len(real) and (row[: len(real)] == 0).any():
            raise ValueError(f"list {i} has padding before its last item")
        if len(np.unique(real)) != len(real):
            raise ValueError(f"list {i} repeats an item")
        if np.isin(real, histories[i]).any():
            raise ValueError(f"list {i} recommends an item of the user's history (history must be excluded)")


def score_lists(
    top: np.ndarray, histories: list[np.ndarray], targets: list[np.ndarray], n_items: int, batch: int = 1024
) -> dict[str, Any]:
    """Our evaluator's metrics from top lists: each listed item scores by its place, every other item −inf, so
    ``rank_metrics`` sees the target's rank as its place in the list and a target outside the list as a miss.

    Returns the means (``hr@K``, ``ndcg@K``, ``mrr@10`` for K in 10, 20), ``coverage@10``, ``n_users`` and
    ``ranks``: each user's 0-based target rank, −1 for a miss (kept for paired comparisons).
    """
    import torch

    from recengine.evaluation import mask_scores, rank_metrics

    check_lists(top, histories, n_items)
    sums: dict[str, float] = {}
    n = len(top)
    k = top.shape[1] if top.ndim == 2 else 0
    for start in range(0, n, batch):
        tb = torch.from_numpy(top[start : start + batch].astype(np.int64))
        scores = torch.full((len(tb), n_items + 1), -torch.inf)
        place = torch.arange(k, 0, -1, dtype=torch.float32).expand(len(tb), k)
        scores.scatter_(1, tb, place)
        mask_scores(scores, histories[start : start + batch])  # padding (0) and history back to −inf
        for name, values in rank_metrics(scores, targets[start : start + batch], KS).items():
            sums[name] = sums.get(name, 0.0) + float(values.sum())
    out: dict[str, Any] = {name: total / max(1, n) for name, total in sorted(sums.items())}
    ranks = np.full(n, -1, dtype=np.int64)
    for i in range(n):
        hit = np.flatnonzero(top[i] == targets[i][0]) if len(targets[i]) else []
        if len(hit):
            ranks[i] = int(hit[0])
    top10 = top[:, :10]
    out["coverage@10"] = float(len(np.unique(top10[top10 > 0]))) / max(1, n_items)
    out["n_users"] = n
    out["ranks"] = ranks.tolist()
    return out


# ---- 3. the peer's environment --------------------------------------------------------------------------------------
def ensure_venv(peer: str, venv: Path, base_python: str = "python3") -> Path:
    """The peer's interpreter, creating its virtual environment and installing its pins when needed.

    A stamp file records what was installed; an environment made elsewhere (``--venv``) gets the pins installed
    over it (pip leaves what already satisfies them).
    """
    python = venv / "bin" / "python"
    stamp = venv / ".recengine-peer.json"
    want = {"torch": TORCH_PIN, "pins": PINS[peer]}
    if python.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == want:
        return python
    if not python.is_file():
        print(f"== creating {venv}", flush=True)
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([base_python, "-m", "venv", str(venv)], check=True)
    for spec in ([TORCH_PIN], PINS[peer]):
        print(f"== {python} -m pip install {' '.join(spec)}", flush=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *spec], check=True)
    stamp.write_text(json.dumps(want))
    return python


# ---- labels and results ---------------------------------------------------------------------------------------------
def status_of(progress: dict[str, Any], args: argparse.Namespace) -> str:
    reason = progress.get("stop_reason")
    if reason == "early_stopped":
        return f"converged (early stopping, patience {args.patience})"
    if reason == "max_epochs":
        return f"capped: lower bound (--max-epochs {args.max_epochs})"
    if reason == "max_hours":
        return f"capped: lower bound (--max-hours {args.max_hours})"
    raise ValueError(f"the peer's progress has no known stop reason: {reason!r}")


def summarize_curve(curve: list[dict[str, Any]], best_epoch: int) -> dict[str, Any]:
    upto = [c for c in curve if c["epoch"] <= best_epoch]
    return {
        "epochs_run": len(curve),
        "best_epoch": best_epoch,
        "seconds_per_epoch_median": float(np.median([c["train_s"] for c in curve])) if curve else None,
        "train_s_to_best": round(sum(c["train_s"] for c in upto), 1),
        "wall_s_to_best": round(sum(c["train_s"] + c["eval_s"] for c in upto), 1),
        "wall_s_total": round(sum(c["train_s"] + c["eval_s"] for c in curve), 1),
    }


def fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "—"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def ours_from_quality(path: Path) -> list[str]:
    """Our engines' rows from quality.json, for reading beside the peers (same split, same evaluator)."""
    if not path.is_file():
        return []
    rows = json.loads(path.read_text())
    lines = []
    for ds in DATASETS:
        for engine in ("transformer", "neural", "ease"):
            group = [r for r in rows if r["dataset"] == ds and r["engine"] == engine]
            if not group:
                continue
            mean = float(np.mean([r["ndcg@10"] for r in group]))
            hr = float(np.mean([r["hr@10"] for r in group]))
            fit = float(np.mean([r["fit_s"] for r in group]))
            seeds = ", ".join(str(r.get("seed", "—")) for r in group)
            commits = ", ".join(sorted({str(r.get("commit", "not recorded")) for r in group}))
            lines.append(f"| {ds} | {engine} | {seeds} | {hr:.4f} | {mean:.4f} | {fit:.0f} | {commits} |")
    return lines


def write_markdown(results_dir: Path, out: Path, command: str) -> None:
    runs = [json.loads(p.read_text()) for p in sorted(results_dir.glob("*.json"))]
    real = [r for r in runs if not r.get("smoke")]
    smoke = [r for r in runs if r.get("smoke")]
    head = (
        "| data set | peer | seed | status | best epoch / run | valid NDCG@10 | test HR@10 | test NDCG@10 |"
        " test HR@20 | test NDCG@20 | s / epoch | wall s to best | wall s total | commit |"
    )
    lines = [
        "# Peers: other libraries' SASRec on our split, scored by our evaluator",
        "",
        *provenance_lines(command),
        "- produced by `benchmarks/peers/run.py` (one run per row; each row's own command, date and commit are in its"
        " JSON under `benchmarks/results/peers/`)",
        "- data: `benchmarks/quality.py`'s `load_dataset` (leave-one-out by time); each peer trains on the training"
        " split only, in its own virtual environment, with its documented SASRec settings (in the JSON)",
        "- selection: after every epoch the peer ranks all items for our validation users (history excluded), early"
        " stopping on validation NDCG@10; the best epoch's top-100 lists for valid and test are scored by"
        " `recengine.evaluation.rank_metrics` (a target outside the top 100 is a miss, which changes nothing @10/@20)",
        "- a run stopped by `--max-epochs` / `--max-hours` before early stopping is a **lower bound**; every run's"
        " validation curve is below",
        "- wall s: training plus the per-epoch validation ranking, summed over epochs (to the best epoch / in all)",
        "",
        head,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def row(r: dict[str, Any]) -> str:
        t, v, c = r["test"], r["valid"], r["curve_summary"]
        return (
            f"| {r['dataset']} | {r['peer']} | {r['seed']} | {r['status']} | {c['best_epoch']} / {c['epochs_run']} | "
            f"{fmt(v['ndcg@10'])} | {fmt(t['hr@10'])} | {fmt(t['ndcg@10'])} | {fmt(t['hr@20'])} | "
            f"{fmt(t['ndcg@20'])} | {fmt(c['seconds_per_epoch_median'], 1)} | {fmt(c['wall_s_to_best'], 0)} | "
            f"{fmt(c['wall_s_total'], 0)} | {r['commit']} |"
        )

    lines += [row(r) for r in real] or ["| — | no converged or capped run recorded yet | | | | | | | | | | | | |"]
    lines += ["", "## Validation curves (valid NDCG@10 by epoch)", ""]
    for r in real + smoke:
        pts = ", ".join(f"{c['epoch']}: {c['valid_ndcg@10']:.4f}" for c in r["curve"])
        lines.append(f"- {r['name']} ({r['status']}): {pts}")
    if smoke:
        lines += [
            "",
            "## Smoke runs (prove the path end to end; a few epochs — NOT results)",
            "",
            head,
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
            *[row(r) for r in smoke],
        ]
    ours = ours_from_quality(BENCH / "results" / "quality.json")
    if ours:
        lines += [
            "",
            "## Ours, from quality.json (same split, same evaluator; fit s = our whole training, to early stopping)",
            "",
            "| data set | engine | seeds | test HR@10 | test NDCG@10 | fit s | commit |",
            "|---|---|---|---|---|---|---|",
            *ours,
        ]
    lines += [
        "",
        "## Published reference points (same protocol: full ranking, leave-one-out)",
        "",
        "| data set | model | HR@10 | NDCG@10 |",
        "|---|---|---|---|",
        *[f"| {ds} | {m} | {hr:.4f} | {nd:.4f} |" for ds, m, hr, nd in PUBLISHED],
    ]
    write_report(out, "\n".join(lines) + "\n")


# ---- main -----------------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--peer", choices=PEERS, required=True)
    p.add_argument("--dataset", choices=DATASETS, required=True)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--max-epochs", type=int, default=None, help="Stop after this many epochs (a lower bound).")
    p.add_argument("--max-hours", type=float, default=None, help="Stop once this much wall time is spent in all.")
    p.add_argument("--patience", type=int, default=10, help="Epochs without a better validation NDCG@10.")
    p.add_argument("--resume", action="store_true", help="Continue the run in the work folder where it stopped.")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="Threads for the peer's torch.")
    p.add_argument("--smoke", action="store_true", help="A path check: stored apart, never a result.")
    p.add_argument(
        "--venv", type=Path, default=None, help="The peer's environment (default $RECENGINE_PEERS_HOME/PEER)."
    )
    p.add_argument("--python", default=None, help="Run the peer with this interpreter; no environment is created.")
    p.add_argument("--work-dir", type=Path, default=None, help="Default $RECENGINE_PEERS_HOME/work/<run name>.")
    p.add_argument("--results-dir", type=Path, default=BENCH / "results" / "peers")
    p.add_argument("--markdown", type=Path, default=BENCH / "results" / "peers.md")
    args = p.parse_args(argv)
    if args.max_epochs is not None and args.max_epochs < 1:
        p.error("--max-epochs must be at least 1")
    if args.max_hours is not None and args.max_hours <= 0:
        p.error("--max-hours must be positive")
    if args.patience < 1:
        p.error("--patience must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from quality import bench_root, load_dataset

    name = run_name(args.peer, args.dataset, args.seed, args.smoke)
    work = args.work_dir or peers_home() / "work" / name
    data_dir = work / "data"
    env_names = [f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("RECENGINE_") and "BENCH" not in k]
    command = " ".join([*env_names, "python benchmarks/peers/run.py", *(argv if argv is not None else sys.argv[1:])])
    if not (bench_root()).is_dir():
        print(f"benchmark data not found under {bench_root()} (set RECENGINE_BENCH_DATA)", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    dataset = load_dataset(args.dataset)
    meta_path = data_dir / "meta.json"
    stale = not meta_path.is_file() or json.loads(meta_path.read_text()).get("dataset_hash") != dataset.content_hash
    if args.resume and stale and (work / "out" / "progress.json").is_file():
        print(f"{work} holds a run on other data ({meta_path}); start it afresh without --resume", file=sys.stderr)
        return 2
    if stale or not args.resume:
        # A fresh export: what this script and the peers derived from the last one goes (nothing else there).
        for sub in ("data", "out", "recbole"):
            shutil.rmtree(work / sub, ignore_errors=True)
        meta = export_dataset(dataset, data_dir)
    else:
        meta = json.loads(meta_path.read_text())
    print(
        f"== {name}: {meta['n_train']} training interactions, {meta['valid_users']} valid / {meta['test_users']} test"
        f" users, {meta['n_items']} items (prepared in {time.perf_counter() - t0:.1f}s) → {work}",
        flush=True,
    )
    if args.python:
        python = Path(args.python)
    elif args.peer == "fake":
        python = Path(sys.executable)
    else:
        python = ensure_venv(args.peer, args.venv or peers_home() / args.peer)
    cmd = [str(python), str(HERE / f"{args.peer}_peer.py"), "--work", str(work), "--seed", str(args.seed)]
    cmd += ["--patience", str(args.patience), "--threads", str(args.threads)]
    cmd += ["--max-epochs", str(args.max_epochs)] if args.max_epochs is not None else []
    cmd += ["--max-hours", str(args.max_hours)] if args.max_hours is not None else []
    cmd += ["--resume"] if args.resume else []
    # The peer sees its own environment only: no PYTHONPATH into our sources, threads as asked.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads), PYTHONUNBUFFERED="1")
    env["RECENGINE_PEERS_COMMIT"] = commit()  # recorded with each epoch: a resumed run may span commits
    print("== " + " ".join(cmd), flush=True)
    rc = subprocess.run(cmd, env=env, cwd=work, check=False).returncode  # cwd: logs a peer writes stay there
    if rc != 0:
        print(f"the peer exited with status {rc}; rerun with --resume to continue from its last epoch", file=sys.stderr)
        return rc
    out = work / "out"
    progress = json.loads((out / "progress.json").read_text())
    peer_info = json.loads((out / "peer.json").read_text())
    with np.load(out / "lists.npz") as z:
        lists = {k: z[k] for k in z.files}
    result: dict[str, Any] = {
        "name": name,
        "peer": args.peer,
        "dataset": args.dataset,
        "seed": args.seed,
        "smoke": args.smoke,
        "status": "smoke run (path check, not a result); " + status_of(progress, args)
        if args.smoke
        else status_of(progress, args),
        "stop_reason": progress["stop_reason"],
        "patience": args.patience,
        "max_epochs": args.max_epochs,
        "max_hours": args.max_hours,
        "threads": args.threads,
        "dataset_hash": meta["dataset_hash"],
        "export": meta,
        "peer_settings": peer_info,
        "curve": progress["curve"],
        "curve_summary": summarize_curve(progress["curve"], progress["best_epoch"]),
        "command": command,
        "commit": commit(),  # at scoring time; each epoch's own is in the curve
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    for split in ("valid", "test"):
        users, histories, targets = read_cases(data_dir, split)
        if not np.array_equal(lists[f"{split}_users"], users):
            print(f"the peer's {split} lists are not for the exported {split} users, in order", file=sys.stderr)
            return 1
        metrics = score_lists(lists[f"{split}_top"], histories, targets, meta["n_items"])
        result[f"{split}_ranks"] = metrics.pop("ranks")
        result[split] = metrics
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / f"{name}.json").write_text(json.dumps(result, indent=1))
    write_markdown(args.results_dir, args.markdown, command)
    t, v = result["test"], result["valid"]
    print(
        f"== {name}: {result['status']}; best epoch {progress['best_epoch']} of {len(progress['curve'])}; valid"
        f" ndcg@10={v['ndcg@10']:.4f}; test hr@10={t['hr@10']:.4f} ndcg@10={t['ndcg@10']:.4f} → {args.markdown}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
