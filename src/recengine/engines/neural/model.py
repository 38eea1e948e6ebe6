"""The two-tower model: an item tower over ids and metadata, a user tower over the history's item vectors.

Plain ``nn.Module`` code: no I/O, no Lightning. The feature tables (category bags, hashed title tokens, normalised
numeric columns) are built by :mod:`recengine.engines.neural.features` and passed in as tensors, so the same model
embeds a trained item, a new item known only by its metadata, and an item inside a history.

Shapes: B batch, L history length, C categories per item, T title tokens per item, K numeric columns, d model width.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from recengine.settings import NeuralSettings

# The fields of TwoTowerConfig that engines.neural settings own (their defaults live there only).
_FROM_SETTINGS = ("d_model", "max_len", "temperature", "dropout")


@dataclass(frozen=True)
class TwoTowerConfig:
    """The towers' shape. The catalogue's sizes come from the data and the feature vocabularies, the rest from the
    engine's settings (:meth:`from_settings`), which own every default; :meth:`from_dict` rebuilds it from an
    artifact."""

    n_id_items: int  # items with a trained id embedding (indices 1..n_id_items); 0 is padding
    n_categories: int  # category vocabulary size (index 0 = none / unknown)
    title_buckets: int  # hashed title token buckets (index 0 = none)
    n_numeric: int  # numeric metadata columns
    d_model: int
    max_len: int
    temperature: float  # the initial temperature; it is learned
    dropout: float

    @classmethod
    def from_settings(
        cls, section: NeuralSettings, n_id_items: int, n_categories: int, title_buckets: int, n_numeric: int
    ) -> TwoTowerConfig:
        sizes = {"n_id_items": n_id_items, "n_categories": n_categories, "title_buckets": title_buckets}
        return cls(**sizes, n_numeric=n_numeric, **{k: getattr(section, k) for k in _FROM_SETTINGS})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TwoTowerConfig:
        return cls(**data)


@dataclass
class ItemInputs:
    """The inputs of the item tower for a set of item occurrences, any leading shape (…)."""

    ids: torch.Tensor  # (…,) long; 0 where the item has no trained id embedding (or it was dropped)
    categories: torch.Tensor  # (…, C) long, 0-padded
    title: torch.Tensor  # (…, T) long, 0-padded
    numeric: torch.Tensor  # (…, K) float, already normalised

    def index(self, idx: torch.Tensor) -> ItemInputs:
        return ItemInputs(self.ids[idx], self.categories[idx], self.title[idx], self.numeric[idx])


def _bag_mean(emb: nn.Embedding, idx: torch.Tensor) -> torch.Tensor:
    # Mean over the non-padding entries; an empty bag gives the zero vector (padding rows are zero).
    summed: torch.Tensor = emb(idx).sum(-2)  # (…, d)
    count = (idx > 0).sum(-1, keepdim=True).clamp(min=1)
    return summed / count


class ItemTower(nn.Module):
    """id embedding + category bag + title-token bag + projected numeric columns, then a residual MLP."""

    def __init__(self, cfg: TwoTowerConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.id_emb = nn.Embedding(cfg.n_id_items + 1, d, padding_idx=0)
        self.cat_emb = nn.Embedding(cfg.n_categories + 1, d, padding_idx=0)
        self.title_emb = nn.Embedding(cfg.title_buckets + 1, d, padding_idx=0)
        self.num_proj = nn.Linear(cfg.n_numeric, d) if cfg.n_numeric > 0 else None
        self.mlp = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        for emb in (self.id_emb, self.cat_emb, self.title_emb):
            nn.init.normal_(emb.weight, std=0.1)
            with torch.no_grad():
                emb.weight[0].zero_()

    def forward(self, x: ItemInputs) -> torch.Tensor:
        h: torch.Tensor = self.id_emb(x.ids)
        for emb, idx in ((self.cat_emb, x.categories), (self.title_emb, x.title)):
            # A bag of padding only adds the zero vector: skip its lookup and its dense gradient, so a catalogue
            # without categories or titles (Beauty's) trains at the cost of an id-only tower, to the same bits.
            if bool(idx.any()):
                h = h + _bag_mean(emb, idx)
        if self.num_proj is not None:
            h = h + self.num_proj(x.numeric)
        out: torch.Tensor = h + self.mlp(h)  # (…, d)
        return out


class UserTower(nn.Module):
    """Attention pooling over the history's item vectors with a learned recency bias, at every position at once.

    Works from the history alone, so it serves any user, including anonymous sessions. At position t the query is
    the item at t (what the user is doing now) plus a learned global query; the keys are the items at 0..t, and a
    per-distance logit bias lets recent items count more. Training reads every position of a sequence in one pass
    (a target at each); serving reads the last real position.
    """

    def __init__(self, cfg: TwoTowerConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.max_len = cfg.max_len
        self.query = nn.Parameter(torch.zeros(d))
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.recency_bias = nn.Parameter(torch.zeros(cfg.max_len))  # logit bias by distance: 0 = the query item
        self.out = nn.Sequential(nn.LayerNorm(2 * d), nn.Linear(2 * d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, seq: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """seq (B, T, d) right-padded item vectors, mask (B, T) True on real items → user vectors (B, T, d)."""
        _, length, d = seq.shape
        t = torch.arange(length, device=seq.device)
        dist = t[:, None] - t[None, :]  # (T, T): query position minus key position
        allowed = (dist >= 0) & mask[:, None, :]  # (B, T, T): causal, real keys only
        x = self.dropout(seq)
        q = self.q_proj(seq + self.query)  # (B, T, d)
        k = self.k_proj(x)  # (B, T, d)
        logits = q @ k.transpose(1, 2) / math.sqrt(d) + self.recency_bias[dist.clamp(0, self.max_len - 1)]
        logits = logits.masked_fill(~allowed, float("-inf"))
        att = torch.nan_to_num(torch.softmax(logits, dim=-1), nan=0.0)  # padded queries have no keys
        pooled = att @ self.v_proj(x)  # (B, T, d)
        out: torch.Tensor = pooled + seq + self.out(torch.cat([pooled, seq], dim=-1))
        return out


class TwoTower(nn.Module):
    """Both towers and the scoring rule: cosine similarity over a learned temperature."""

    def __init__(self, cfg: TwoTowerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.item_tower = ItemTower(cfg)
        self.user_tower = UserTower(cfg)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(cfg.temperature)))

    @property
    def temperature(self) -> torch.Tensor:
        # Bounded so that a runaway temperature cannot flatten or explode the softmax.
        return self.log_temperature.exp().clamp(0.01, 1.0)

    def item_vectors(self, x: ItemInputs) -> torch.Tensor:
        """L2-normalised item vectors (…, d)."""
        return F.normalize(self.item_tower(x), dim=-1)

    def user_vectors(self, seq_vectors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """L2-normalised user vectors (B, T, d) at every position of right-padded history item vectors (B, T, d)."""
        return F.normalize(self.user_tower(seq_vectors, mask), dim=-1)

    def last_user_vectors(self, seq_vectors: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """L2-normalised user vectors (B, d) after the last real item of each right-padded history."""
        mask = torch.arange(seq_vectors.shape[1], device=seq_vectors.device)[None, :] < lengths[:, None]
        users = self.user_vectors(seq_vectors * mask.unsqueeze(-1), mask)  # (B, T, d)
        last = (lengths - 1).clamp(min=0)
        return users[torch.arange(users.shape[0], device=users.device), last]  # (B, d)
