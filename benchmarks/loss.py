"""Cost of the transformer's full-softmax loss: the fused ``full_softmax_ce`` (``engines/transformer/loss.py``) against
``F.cross_entropy`` on the logits.

One training step (encode → loss → backward; ``SASRec.loss`` with one target per position) of the default SASRec on a
batch shaped like Amazon Beauty's under the default batching: 256 histories of up to 20 items, lengths drawn from a
geometric distribution with Beauty's mean, a 12,101-item catalogue. Both variants run on the same model, batch and
threads, interleaved, so the machine's noise falls on both; the figure is the median over ``--reps`` steps of each.

    .venv/bin/python benchmarks/loss.py                          # writes benchmarks/results/loss.md
    .venv/bin/python benchmarks/loss.py --items 100000 --output -
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from recengine.engines.transformer.model import SASRec, SASRecConfig
from recengine.settings import TransformerSettings


def batch(n_items: int, histories: int, max_len: int, mean_len: float, seed: int) -> torch.Tensor:
    """(B, T + 1) right-padded item ids: inputs are [:, :-1], targets [:, 1:]."""
    g = torch.Generator().manual_seed(seed)
    p = 1.0 / mean_len
    lengths = (torch.log(torch.rand(histories, generator=g)) / torch.log(torch.tensor(1 - p))).long() + 2
    lengths = lengths.clamp(max=max_len + 1)
    seqs = torch.zeros(histories, int(lengths.max()), dtype=torch.long)
    for i, n in enumerate(lengths.tolist()):
        seqs[i, :n] = torch.randint(1, n_items + 1, (n,), generator=g)
    return seqs


def step_fn(model: SASRec, seqs: torch.Tensor, fused: bool) -> Callable[[], float]:
    """One timed step: the engine's own ``SASRec.loss`` (fused), or the same positions through ``F.cross_entropy``."""
    inputs, targets = seqs[:, :-1], seqs[:, 1:]

    def reference() -> torch.Tensor:
        where = targets > 0  # (B, T)
        h = model.encode(inputs)[where]  # (P, d)
        w = model.item_emb.weight  # (N + 1, d), tied
        return F.cross_entropy(h @ w[1:].T, targets[where] - 1)

    def step() -> float:
        model.zero_grad(set_to_none=True)
        t = time.perf_counter()
        loss = model.loss(inputs, targets, kind="ce") if fused else reference()
        loss.backward()
        return (time.perf_counter() - t) * 1000

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=12_101)
    parser.add_argument("--histories", type=int, default=256)
    parser.add_argument("--max-len", type=int, default=20)
    parser.add_argument("--mean-len", type=float, default=8.9, help="mean history length (Beauty: 8.9)")
    parser.add_argument("--reps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default="benchmarks/results/loss.md", help="markdown file, or - for stdout")
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    d = TransformerSettings()  # the engine's defaults, as the engine builds its model from them
    model = SASRec(SASRecConfig.from_settings(d, n_items=args.items, max_len=args.max_len))
    model.train()
    seqs = batch(args.items, args.histories, args.max_len, args.mean_len, seed=0)
    positions = int((seqs[:, 1:] > 0).sum())
    steps = {"F.cross_entropy": step_fn(model, seqs, fused=False), "full_softmax_ce": step_fn(model, seqs, fused=True)}
    for fn in steps.values():  # warm-up: allocator, thread pool
        for _ in range(3):
            fn()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.reps):
        for name, fn in steps.items():
            times[name].append(fn())

    base = statistics.median(times["F.cross_entropy"])
    rows = [
        "| loss | median ms / step | p10 / p90 ms | vs F.cross_entropy |",
        "| --- | --- | --- | --- |",
    ]
    for name, ts in times.items():
        q = statistics.quantiles(ts, n=10)
        med = statistics.median(ts)
        rows.append(f"| `{name}` | {med:.1f} | {q[0]:.1f} / {q[-1]:.1f} | {100 * (med / base - 1):+.0f} % |")
    text = "\n".join(
        [
            "# Full-softmax loss: fused vs `F.cross_entropy`",
            "",
            f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
            f"- machine: {platform.machine()}, {os.cpu_count()} CPU cores, {args.threads} threads, "
            f"torch {torch.__version__}, {os.getloadavg()[0]:.1f} load average (1 min) at the end",
            f"- command: `python {' '.join(sys.argv)}`",
            f"- one training step (encode, loss, backward) of SASRec with the engine's defaults (d {d.d_model}, "
            f"{d.n_layers} layers, {d.block}, dropout {d.dropout}) on {args.histories} histories of up to "
            f"{args.max_len} items ({positions:,} target positions) over {args.items:,} items; median of {args.reps} "
            "steps each, the two interleaved",
            "",
            *rows,
            "",
        ]
    )
    if args.output != "-":
        Path(args.output).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
