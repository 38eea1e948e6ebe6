"""The fused full-softmax cross-entropy of the transformer's ``ce`` loss and the neural engine's exact softmax: every
item is a class, the output embeddings are the item table (the transformer's tied embeddings, the two-tower's item
vectors), and one (positions × items) buffer does the work of four."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable


class _FullSoftmaxCE(torch.autograd.Function):
    """Mean softmax cross-entropy of ``h @ w[1:].T`` against weighted targets, with one (P, N) buffer instead of four.

    ``F.cross_entropy`` over a matrix product keeps the logits and the log-probabilities and, in backward, writes a
    one-hot gradient and the logits' gradient: four passes over (P, N) memory, which on a CPU cost more than the
    product itself. Here the softmax overwrites the logits in place and backward turns those probabilities into the
    gradient (p - targets) in place: forward + backward of a Beauty-shaped step take ~30 % less time
    (``benchmarks/loss.py``).
    """

    @staticmethod
    def forward(ctx: Any, h: torch.Tensor, w: torch.Tensor, y: torch.Tensor, share: torch.Tensor) -> torch.Tensor:
        # h (P, d) states; w (N + 1, d) item table, row 0 = padding, never a class; y (P, K) items in 1..N with
        # share (P, K) their weights, each row summing to 1 (a target distribution over K items).
        probs = h @ w[1:].T  # (P, N) logits, softmaxed in place below
        top = probs.amax(1, keepdim=True)  # (P, 1)
        total = probs.sub_(top).exp_().sum(1, keepdim=True)  # (P, 1)
        probs.div_(total)
        log_z = (total.log_() + top).squeeze(1)  # (P,)
        target_logit = (share * torch.einsum("pd,pkd->pk", h, w[y])).sum(1)  # (P,)
        ctx.save_for_backward(h, w, y, share, probs)
        return (log_z - target_logit).mean()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None, None]:
        h, w, y, share, probs = ctx.saved_tensors
        # d(mean CE)/d(logits) = (softmax - targets) / P, built in the saved buffer: a second backward through the
        # same graph (retain_graph) is refused by autograd's version check rather than computed wrong.
        rows = torch.arange(h.shape[0], device=h.device).unsqueeze(1).expand_as(y)
        probs.index_put_((rows.reshape(-1), y.reshape(-1) - 1), -share.reshape(-1), accumulate=True)
        scale = grad / h.shape[0]
        grad_h = torch.mm(probs, w[1:]) * scale  # (P, d)
        grad_w = torch.zeros_like(w)
        torch.mm(probs.T, h, out=grad_w[1:])
        grad_w[1:] *= scale
        return grad_h, grad_w, None, None


def full_softmax_ce(
    h: torch.Tensor, w: torch.Tensor, y: torch.Tensor, share: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean softmax cross-entropy over every item: (P, d) states, (N + 1, d) tied table, targets in 1..N.

    ``y`` is (P,) — one target per row, equal to ``F.cross_entropy(h @ w[1:].T, y - 1)`` — or (P, K) with ``share``
    (P, K) weights summing to 1 per row: the loss against that target distribution. Under autocast the plain form
    is used, so the product runs in the autocast dtype.
    """
    if y.dim() == 1:
        y = y.unsqueeze(1)
    if share is None:
        share = torch.ones(y.shape, dtype=h.dtype, device=h.device)
    if torch.is_autocast_enabled(h.device.type):
        logp = F.log_softmax(h @ w[1:].T, dim=1)  # (P, N)
        return -(share * logp.gather(1, y - 1)).sum(1).mean()
    out: torch.Tensor = _FullSoftmaxCE.apply(h, w, y, share.to(h.dtype))  # type: ignore[no-untyped-call]
    return out
