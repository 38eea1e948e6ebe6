"""Cost of the transformer's full-softmax loss: the fused ``full_softmax_ce`` (``engines/softmax.py``) against
the same loss through ``log_softmax`` on the logits (what ``F.cross_entropy`` does for soft targets).

One training step (encode → loss → backward; ``SASRec.loss`` with the engine's default targets, the next ``ahead``
items of each position with decaying weights) of the default SASRec on a
batch shaped like Amazon Beauty's under the default batching: 256 histories of up to 20 items, lengths drawn from a
geometric distribution with Beauty's mean, a 12,101-item catalogue. Both variants run on the same model, batch and
threads, interleaved, so the machine's noise falls on both; the figure is the median over ``--reps`` steps of each.

    .venv/bin/python benchmarks/loss.py                          # writes benchmarks/results/loss.md
    .venv/bin/python benchmarks/loss.py --items 100000 --output -
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from provenance import provenance_lines, write_report
from recengine.engines.transformer.model import SASRec, SASRecConfig, targets_ahead
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


def loss_fns(model: SASRec, seqs: torch.Tensor, d: TransformerSettings) -> dict[str, Callable[[], torch.Tensor]]:
    """The engine's own ``SASRec.loss`` with its default targets (the next ``d.ahead`` items, weighted
    ``d.ahead_decay ** j``; fused), and the same loss through ``log_softmax`` over the logits."""
    inputs, targets = seqs[:, :-1], seqs[:, 1:]

    def reference() -> torch.Tensor:
        where = targets > 0  # (B, T)
        h = model.encode(inputs)[where]  # (P, d)
        w = model.item_emb.weight  # (N + 1, d), tied
        ids, weight = targets_ahead(targets, where, d.ahead, d.ahead_decay)  # (P, k) each
        logp = F.log_softmax(h @ w[1:].T, dim=1)  # (P, N): F.cross_entropy's own path for soft targets
        return -(weight * logp.gather(1, ids - 1)).sum(1).mean()

    def fused() -> torch.Tensor:
        return model.loss(inputs, targets, kind=d.loss, ahead=d.ahead, ahead_decay=d.ahead_decay)

    return {"log_softmax (reference)": reference, "full_softmax_ce": fused}


def timed(model: SASRec, loss: Callable[[], torch.Tensor]) -> Callable[[], float]:
    """One training step (encode, loss, backward) in milliseconds."""

    def step() -> float:
        model.zero_grad(set_to_none=True)
        t = time.perf_counter()
        loss().backward()
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
    fns = loss_fns(model, seqs, d)
    model.eval()  # no dropout: both must compute the very same value
    with torch.no_grad():
        ref, fused = (float(fn()) for fn in fns.values())
    model.train()
    steps = {name: timed(model, fn) for name, fn in fns.items()}
    for fn in steps.values():  # warm-up: allocator, thread pool
        for _ in range(3):
            fn()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.reps):
        for name, fn in steps.items():
            times[name].append(fn())

    base = statistics.median(times["log_softmax (reference)"])
    rows = [
        "| loss | median ms / step | p10 / p90 ms | vs the reference |",
        "| --- | --- | --- | --- |",
    ]
    for name, ts in times.items():
        q = statistics.quantiles(ts, n=10)
        med = statistics.median(ts)
        rows.append(f"| `{name}` | {med:.1f} | {q[0]:.1f} / {q[-1]:.1f} | {100 * (med / base - 1):+.0f} % |")
    text = "\n".join(
        [
            "# Full-softmax loss: fused vs the same loss through `log_softmax`",
            "",
            *provenance_lines(f"python {' '.join(sys.argv)}", threads=args.threads),
            f"- one training step (encode, loss, backward) of SASRec with the engine's defaults (d {d.d_model}, "
            f"{d.n_layers} layers, {d.block}, dropout {d.dropout}, loss {d.loss} over the next {d.ahead} items "
            f"weighted {d.ahead_decay} ** j) on {args.histories} histories of up to "
            f"{args.max_len} items ({positions:,} target positions) over {args.items:,} items; median of {args.reps} "
            f"steps each, the two interleaved; the two losses agree: {ref:.6f} vs {fused:.6f} (dropout off)",
            "",
            *rows,
            "",
        ]
    )
    if args.output != "-":
        text = write_report(Path(args.output), text)
    print(text)


if __name__ == "__main__":
    main()
