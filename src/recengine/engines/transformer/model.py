"""SASRec-family next-item model: a pre-LayerNorm causal transformer over a user's item sequence.

Read top to bottom: the config, one block, the model (encode → training losses → inference scores); the fused
full-softmax cross-entropy is in ``loss.py``.
Shapes: B batch, T sequence positions, d width, N items (index 0 is padding, real items are 1..N).

Sequences are right-padded: item t sits at position t counted from the oldest kept item, padding follows the last
item. With a causal mask, a real position only ever sees real positions before it, so no padding mask is needed and
attention runs on PyTorch's fused ``scaled_dot_product_attention`` kernel.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from recengine.engines.softmax import full_softmax_ce
from recengine.settings import TransformerSettings

Loss = Literal["ce", "sampled_softmax", "bce"]


# The fields of SASRecConfig that engines.transformer settings own (their defaults live there only).
_FROM_SETTINGS = ("d_model", "n_layers", "n_heads", "dropout", "attn_dropout", "block", "positions")


@dataclass(frozen=True)
class SASRecConfig:
    """The model's shape and regularisation. Built from the engine's settings (:meth:`from_settings`), which own
    every default; :meth:`from_dict` rebuilds it from an artifact."""

    n_items: int  # N; the embedding table has N + 1 rows
    max_len: int
    d_model: int
    n_layers: int
    n_heads: int
    dropout: float
    attn_dropout: float  # on the attention weights
    block: Literal["pre_ln", "post_ln", "gated"]
    """"pre_ln": LayerNorm before each branch, one after the last block; "post_ln": LayerNorm after each residual
    sum and over the input embeddings (BERT's, and RecBole's SASRec, layout); "gated": pre-LN with each branch scaled
    by a sigmoid gate computed from the block's input and a SwiGLU MLP (LiGR-style layers, as in eSASRec)."""
    positions: Literal["from_oldest", "from_newest"]
    """Count positions from the oldest kept item, or back from the newest (the item being extended is always at
    position 0, as with SASRec's left padding)."""
    d_ff: int | None = None  # None → 4 · d_model; not a setting

    @classmethod
    def from_settings(cls, section: TransformerSettings, n_items: int, max_len: int) -> SASRecConfig:
        """The engine's settings for a catalogue of ``n_items`` and a resolved ``max_len`` (settings may say "auto")."""
        return cls(n_items=n_items, max_len=max_len, **{k: getattr(section, k) for k in _FROM_SETTINGS})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SASRecConfig:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


class SwiGLU(nn.Module):
    """MLP with a SiLU-gated hidden layer: (silu(x W) * x V) U, no biases."""

    def __init__(self, d: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.w = nn.Linear(d, d_ff, bias=False)
        self.v = nn.Linear(d, d_ff, bias=False)
        self.u = nn.Linear(d_ff, d, bias=False)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.drop(self.u(F.silu(self.w(x)) * self.v(x)))
        return out


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(LN(x)), then x + mlp(LN(x)). Pre-LN trains stably without warm-up tricks.

    With ``block="post_ln"``: LN(x + attn(x)), then LN(x + mlp(x)); every block's output, the last one's included,
    has unit scale per position, which the tied output embeddings then score. With ``block="gated"`` each pre-LN
    branch is multiplied by sigmoid(x G) before it is added back, so the block learns how much of each branch to
    let through per position and channel.
    """

    def __init__(self, c: SASRecConfig) -> None:
        super().__init__()
        if c.d_model % c.n_heads:
            raise ValueError(f"d_model ({c.d_model}) must be a multiple of n_heads ({c.n_heads})")
        self.n_heads = c.n_heads
        self.attn_dropout = c.attn_dropout
        self.post_ln = c.block == "post_ln"
        self.ln1 = nn.LayerNorm(c.d_model)
        self.qkv = nn.Linear(c.d_model, 3 * c.d_model)
        self.proj = nn.Linear(c.d_model, c.d_model)
        self.ln2 = nn.LayerNorm(c.d_model)
        d_ff = c.d_ff or 4 * c.d_model
        self.mlp: nn.Module
        if c.block == "gated":
            self.mlp = SwiGLU(c.d_model, d_ff, c.dropout)
            self.gate1: nn.Linear | None = nn.Linear(c.d_model, c.d_model)
            self.gate2: nn.Linear | None = nn.Linear(c.d_model, c.d_model)
        else:
            self.mlp = nn.Sequential(
                nn.Linear(c.d_model, d_ff), nn.GELU(), nn.Linear(d_ff, c.d_model), nn.Dropout(c.dropout)
            )
            self.gate1 = self.gate2 = None
        self.resid_drop = nn.Dropout(c.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x if self.post_ln else self.ln1(x)).split(d, dim=2)  # (B, T, d) each
        q, k, v = (z.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2) for z in (q, k, v))  # (B, h, T, d/h)
        # Dropout on the attention weights makes PyTorch use a kernel that materialises (B, h, T, T): cheap for
        # short windows, which is where the sparse data that needs it live.
        p = self.attn_dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)  # (B, h, T, d/h)
        y = self.resid_drop(self.proj(y.transpose(1, 2).reshape(b, t, d)))
        if self.post_ln:
            x = self.ln1(x + y)
            out_post: torch.Tensor = self.ln2(x + self.mlp(x))
            return out_post
        x = x + (y if self.gate1 is None else torch.sigmoid(self.gate1(x)) * y)
        m = self.mlp(self.ln2(x))
        out: torch.Tensor = x + (m if self.gate2 is None else torch.sigmoid(self.gate2(x)) * m)
        return out


class SASRec(nn.Module):
    def __init__(self, c: SASRecConfig) -> None:
        super().__init__()
        self.config = c
        self.item_emb = nn.Embedding(c.n_items + 1, c.d_model, padding_idx=0)
        self.pos_emb = nn.Embedding(c.max_len, c.d_model)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layers))
        # Post-LN normalises the summed input embeddings and ends normalised; pre-LN needs one LayerNorm at the end.
        self.ln_in: nn.Module = nn.LayerNorm(c.d_model) if c.block == "post_ln" else nn.Identity()
        self.ln_f: nn.Module = nn.Identity() if c.block == "post_ln" else nn.LayerNorm(c.d_model)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        # Small normal init (as in GPT-2/BERT): with tied output embeddings, large initial logits slow CE down.
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)
            if m.padding_idx is not None:
                with torch.no_grad():
                    m.weight[m.padding_idx].zero_()

    # ---- encode ------------------------------------------------------------------------------------------------
    def encode(self, seqs: torch.Tensor) -> torch.Tensor:
        """Right-padded item indices (B, T ≤ max_len) → hidden state after each position (B, T, d)."""
        t = seqs.shape[1]
        if t > self.config.max_len:
            raise ValueError(f"sequence length {t} exceeds max_len {self.config.max_len}")
        pos = torch.arange(t, device=seqs.device)  # (T,)
        if self.config.positions == "from_newest":
            # Right-padded: the last real item gets 0. Padding slots clamp to 0; causality keeps them unseen.
            lengths = (seqs > 0).sum(1, keepdim=True)  # (B, 1)
            pos = (lengths - 1 - pos).clamp(min=0)  # (B, T)
        # Pre-LN: sqrt(d) scaling keeps item embeddings (std 0.02) from being drowned by positions at the start.
        # Post-LN: the input LayerNorm sets the scale, items and positions enter with equal weight.
        scale = 1.0 if self.config.block == "post_ln" else math.sqrt(self.config.d_model)
        x = self.drop(self.ln_in(self.item_emb(seqs) * scale + self.pos_emb(pos)))  # (B, T, d)
        for block in self.blocks:
            x = block(x)
        out: torch.Tensor = self.ln_f(x)  # (B, T, d)
        return out

    # ---- training ----------------------------------------------------------------------------------------------
    def loss(
        self,
        seqs: torch.Tensor,
        targets: torch.Tensor,
        kind: Loss = "ce",
        n_negatives: int = 256,
        sampling_probs: torch.Tensor | None = None,
        ahead: int = 1,
        ahead_decay: float = 0.5,
    ) -> torch.Tensor:
        """Mean next-item loss over every non-padded position of (B, T) inputs with (B, T) targets (0 = none).

        Logits are computed only where a target exists: on short-sequence data most of B × T is padding, and the
        (positions × N) product is the most expensive step of training. With ``ahead`` > 1 (``ce`` only) each
        position's target is a distribution over the next ``ahead`` items (see :func:`targets_ahead`): the softmax
        is the same, so it costs no more.
        """
        h = self.encode(seqs)  # (B, T, d)
        where = targets > 0  # (B, T)
        h = h[where]  # (P, d)
        y = targets[where]  # (P,)
        w = self.item_emb.weight  # (N + 1, d), tied
        if kind == "ce":
            if ahead > 1:
                return full_softmax_ce(h, w, *targets_ahead(targets, where, ahead, ahead_decay))
            return full_softmax_ce(h, w, y)
        if ahead > 1:
            raise ValueError(f"predicting {ahead} items ahead needs the full softmax (loss 'ce'), not {kind!r}")
        if kind == "sampled_softmax":
            return self._sampled_softmax(h, y, w, n_negatives, sampling_probs)
        if kind == "bce":
            neg = torch.randint(1, w.shape[0], y.shape, device=y.device)  # (P,): one uniform negative, as in SASRec
            pos_logit = (h * w[y]).sum(-1)
            neg_logit = (h * w[neg]).sum(-1)
            return F.binary_cross_entropy_with_logits(
                pos_logit, torch.ones_like(pos_logit)
            ) + F.binary_cross_entropy_with_logits(neg_logit, torch.zeros_like(neg_logit))
        raise ValueError(f"unknown loss {kind!r}; expected ce, sampled_softmax or bce")

    @staticmethod
    def _sampled_softmax(
        h: torch.Tensor, y: torch.Tensor, w: torch.Tensor, n_neg: int, probs: torch.Tensor | None
    ) -> torch.Tensor:
        """Softmax over the target and ``n_neg`` shared negatives drawn from ``probs`` (default uniform).

        Subtracting log q(item) from each logit (log-Q correction) makes the sampled softmax an unbiased estimate of
        the full one's gradient direction, instead of a model that learns to demote popular items.
        """
        n = w.shape[0] - 1
        if probs is None:
            probs = torch.full((n + 1,), 1.0 / n, device=w.device)
            probs[0] = 0.0
        neg = torch.multinomial(probs, n_neg, replacement=True)  # (K,)
        log_q = torch.log(probs.clamp_min(1e-12))
        pos_logit = (h * w[y]).sum(-1, keepdim=True) - log_q[y].unsqueeze(1)  # (P, 1)
        neg_logit = h @ w[neg].T - log_q[neg].unsqueeze(0)  # (P, K)
        # A negative that happens to be the target is not a negative.
        neg_logit = neg_logit.masked_fill(neg.unsqueeze(0) == y.unsqueeze(1), float("-inf"))
        logits = torch.cat([pos_logit, neg_logit], dim=1)  # (P, 1 + K)
        return F.cross_entropy(logits, torch.zeros_like(y))

    # ---- inference ---------------------------------------------------------------------------------------------
    def last_hidden(self, seqs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Hidden state after each sequence's last real item: (B, T), (B,) → (B, d); length 0 reads position 0."""
        h = self.encode(seqs)  # (B, T, d)
        return h[torch.arange(seqs.shape[0], device=seqs.device), (lengths - 1).clamp(min=0)]

    def scores(self, seqs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Score of every item as the next one: (B, T), (B,) → (B, N + 1); column 0 (padding) is -inf."""
        s = self.last_hidden(seqs, lengths) @ self.item_emb.weight.T  # (B, N + 1)
        s[:, 0] = float("-inf")
        return s


def targets_ahead(
    targets: torch.Tensor, where: torch.Tensor, k: int, decay: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The next ``k`` items after each target position and their weights: (B, T) targets → (P, k), (P, k).

    Column j holds the item j + 1 steps after the position's input (column 0 is the target itself), weighted
    ``decay ** j``; a missing item (past the end of the window) gets weight 0; each row is scaled to sum to 1.
    """
    cols = [targets]
    for j in range(1, k):
        later = torch.zeros_like(targets)
        later[:, :-j] = targets[:, j:]
        cols.append(later)
    ahead = torch.stack(cols, dim=-1)[where]  # (P, k)
    weight = (ahead > 0).to(torch.float32) * decay ** torch.arange(k, device=targets.device, dtype=torch.float32)
    return ahead.clamp(min=1), weight / weight.sum(1, keepdim=True)
