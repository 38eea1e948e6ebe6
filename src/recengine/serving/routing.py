"""Which engine answers a request, and which ones stand behind it.

Order of decision:

1. an explicit ``engine`` in the request, when that engine is enabled;
2. the experiment: a weighted split on stable hashes of (experiment name, user id, arm) — the same user lands in the
   same arm on every request, every worker and every replica, and changing the weights moves as few users as the
   new shares allow (weighted rendezvous hashing, see :func:`assign`). In ``interleave`` mode (``interleave`` names two
   engines) there are no arms: every user's answer merges the two engines' (team draft, ``serving/interleave.py``),
   when both are enabled;
3. the rules: no history → the floor (popularity); a history shorter than ``short_history`` → the short-history
   engine (neural); longer → the long-history engine (transformer) — the roles of ``engines.ENGINES``.

The chain behind the chosen engine is ``routing.fallback`` (enabled engines only), and the floor is always its last
link: it needs no history and cannot time out, so every request gets an answer. Switching the floor off keeps it out
of experiments and fallback preferences, never out of that last link.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from recengine.engines import FLOOR, RULE_ENGINES
from recengine.settings import CacheSettings, ExperimentSettings, RoutingSettings, ServingSettings


def _default(section: type[BaseModel], key: str) -> Any:
    return section.model_fields[key].get_default(call_default_factory=True)


@dataclass(frozen=True)
class RuntimeConfig:
    """The settings an operator may change while the server runs (``RUNTIME_KEYS``), as one immutable
    snapshot. Unset fields take the settings' defaults; an engine not in ``enabled`` is off."""

    enabled: Mapping[str, bool] = field(default_factory=dict)
    short_history: int = _default(RoutingSettings, "short_history")
    fallback: tuple[str, ...] = tuple(_default(RoutingSettings, "fallback"))
    experiment_name: str = _default(ExperimentSettings, "name")
    experiment_weights: Mapping[str, float] = field(default_factory=dict)
    experiment_interleave: tuple[str, ...] = ()
    """Two engines: interleave their answers for every known user (``routing.experiment.interleave``)."""
    cache_ttl_s: float = _default(CacheSettings, "ttl_s")
    engine_timeout_ms: float = _default(ServingSettings, "engine_timeout_ms")

    def is_enabled(self, engine: str) -> bool:
        return self.enabled.get(engine, False)


@dataclass(frozen=True)
class Decision:
    primary: str
    reason: str
    """explicit | experiment:<name> | interleave:<name> | rule:no_history | rule:short_history | rule:long_history"""
    chain: tuple[str, ...]
    """Engines to try, in order; starts with ``primary`` and ends with the floor."""
    note: str | None = None
    """Why the request did not get what it asked for (e.g. the requested engine is disabled)."""
    interleave: tuple[str, str] | None = None
    """An ``interleave`` experiment: the two engines whose answers are merged (team draft); ``primary`` is the
    first, ``chain`` what answers if neither can."""

    @property
    def experiment(self) -> str | None:
        """The experiment that decided the engine, if one did."""
        head, _, name = self.reason.partition(":")
        return name if head in ("experiment", "interleave") else None


def bucket(experiment: str, user_id: str) -> float:
    """A uniform number in [0, 1) fixed by (experiment, user): blake2b, so it is the same in every process."""
    digest = hashlib.blake2b(f"{experiment}\x1f{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def assign(experiment: str, weights: Mapping[str, float], user_id: str) -> str | None:
    """The experiment arm of ``user_id``; None when there is no experiment (no positive weight).

    Weighted rendezvous hashing: each arm draws an exponential "clock" ``-ln(u) / w`` from a hash of (experiment,
    user, arm) and the earliest clock wins, so an arm gets exactly ``w / Σw`` of the users. A change of weights
    moves only the users whose winner changes, which is the minimum: a new arm takes exactly its share from the
    others, raising one arm's weight only moves users into it, and removing an arm only moves its own users.
    (Cumulative intervals on one hash, the earlier scheme, moved half the users when a third equal arm was added.)
    """
    arms = [(name, w) for name, w in weights.items() if w > 0]
    if not arms:
        return None

    def clock(arm: tuple[str, float]) -> tuple[float, str]:
        u = bucket(experiment, f"{user_id}\x1f{arm[0]}")  # [0, 1)
        return -math.log1p(-u) / arm[1], arm[0]

    return min(arms, key=clock)[0]


def decide(cfg: RuntimeConfig, user_id: str | None, history_len: int, requested: str | None = None) -> Decision:
    note = None
    if requested is not None:
        if cfg.is_enabled(requested) or requested == FLOOR:
            return Decision(requested, "explicit", _chain(cfg, requested))
        note = f"requested engine {requested!r} is disabled"
    if user_id is not None and cfg.experiment_interleave:
        pair = list(cfg.experiment_interleave)
        if len(pair) == 2 and all(cfg.is_enabled(name) for name in pair):
            return Decision(
                pair[0], f"interleave:{cfg.experiment_name}", _chain(cfg, pair[0]), note, (pair[0], pair[1])
            )
    elif user_id is not None:
        arm = assign(cfg.experiment_name, cfg.experiment_weights, user_id)
        if arm is not None and cfg.is_enabled(arm):
            return Decision(arm, f"experiment:{cfg.experiment_name}", _chain(cfg, arm), note)
    if history_len == 0:
        primary, reason = FLOOR, "rule:no_history"
    elif history_len < cfg.short_history:
        primary, reason = RULE_ENGINES["short_history"], "rule:short_history"
    else:
        primary, reason = RULE_ENGINES["long_history"], "rule:long_history"
    return Decision(primary, reason, _chain(cfg, primary), note)


def _chain(cfg: RuntimeConfig, primary: str) -> tuple[str, ...]:
    chain = [primary]
    for name in cfg.fallback:
        if name not in chain and name != FLOOR and cfg.is_enabled(name):
            chain.append(name)
    if FLOOR not in chain:
        chain.append(FLOOR)
    return tuple(chain)
