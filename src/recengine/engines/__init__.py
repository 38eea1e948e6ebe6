"""Engines by name: the one table of every engine, and loading by name or from an artifact.

Adding an engine means one row in :data:`ENGINES` (and its section in ``settings.EnginesSettings``): the API's engine
enum, the runtime switches, the default fallback chain, the routing rules and the similar-items order all derive from
the table.

Imports are lazy so that serving one engine never pulls in another's dependencies, and so that this table can be read
(by the settings, the routing and the API schemas) without importing torch.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

from recengine.errors import ArtifactError, ConfigError

if TYPE_CHECKING:
    from recengine.engines.base import Engine

Role = Literal["floor", "short_history", "long_history"]
"""What the routing rules give an engine: ``floor`` answers an empty history and ends every fallback chain;
``short_history`` / ``long_history`` answer histories shorter / not shorter than ``routing.short_history``."""


@dataclass(frozen=True)
class EngineEntry:
    name: str
    target: str
    """``"module:Class"``, imported on first use."""
    needs_history: bool
    """The engine raises NoHistory on an empty history (the class's own ``needs_history`` must agree)."""
    fallback_rank: int
    """Place in the default fallback chain (``routing.fallback``), 1 first."""
    similar_rank: int
    """Place in the preference order for items similar to an item, 1 first: embedding engines before the rest."""
    role: Role | None = None


#: Every engine, in the order the API, the runtime switches and the engine listings show them.
ENGINES: tuple[EngineEntry, ...] = (
    EngineEntry(
        "popularity", "recengine.engines.popularity:Popularity", False, fallback_rank=4, similar_rank=4, role="floor"
    ),
    EngineEntry("ease", "recengine.engines.ease:EASE", False, fallback_rank=3, similar_rank=2),
    EngineEntry(
        "transformer",
        "recengine.engines.transformer.engine:TransformerEngine",
        True,
        fallback_rank=1,
        similar_rank=3,
        role="long_history",
    ),
    EngineEntry(
        "neural",
        "recengine.engines.neural.engine:NeuralEngine",
        True,
        fallback_rank=2,
        similar_rank=1,
        role="short_history",
    ),
    # The ranking stage over the others' candidates: no routing role (chosen by name, an experiment or the routing
    # settings), and last in the fallback chain before the floor, after every engine it composes.
    EngineEntry("ranker", "recengine.engines.ranker:Ranker", True, fallback_rank=5, similar_rank=5),
)

ENGINE_NAMES: tuple[str, ...] = tuple(e.name for e in ENGINES)
#: engine name → "module:Class"
ENGINE_CLASSES: dict[str, str] = {e.name: e.target for e in ENGINES}
#: The default fallback chain and the similar-items preference, best first.
FALLBACK_ORDER: tuple[str, ...] = tuple(e.name for e in sorted(ENGINES, key=lambda e: e.fallback_rank))
SIMILAR_ORDER: tuple[str, ...] = tuple(e.name for e in sorted(ENGINES, key=lambda e: e.similar_rank))
#: The engine of each routing rule.
RULE_ENGINES: dict[Role, str] = {e.role: e.name for e in ENGINES if e.role is not None}
FLOOR: str = RULE_ENGINES["floor"]

if len(RULE_ENGINES) != sum(e.role is not None for e in ENGINES) or set(RULE_ENGINES) != set(get_args(Role)):
    raise ConfigError("ENGINES must give each routing role to exactly one engine")


def engine_class(name: str) -> type[Engine]:
    target = ENGINE_CLASSES.get(name)
    if target is None:
        raise ConfigError(f"unknown engine {name!r}; expected one of {', '.join(ENGINE_CLASSES)}")
    module, cls = target.split(":")
    try:
        found: type[Engine] = getattr(importlib.import_module(module), cls)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"engine {name!r} is not available in this build ({exc})") from exc
    return found


def load_engine(path: Path) -> Engine:
    """Load whichever engine wrote the artifact at ``path``."""
    path = Path(path)
    config_path = path / "config.json"
    try:
        name = json.loads(config_path.read_text()).get("engine")
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing config.json; not a model artifact") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
        raise ArtifactError(f"{config_path}: not valid JSON ({exc})") from None
    if name not in ENGINE_CLASSES:
        raise ArtifactError(f"{config_path}: unknown engine {name!r}")
    return engine_class(name).load(path)


__all__ = [
    "ENGINES",
    "ENGINE_CLASSES",
    "ENGINE_NAMES",
    "FALLBACK_ORDER",
    "FLOOR",
    "RULE_ENGINES",
    "SIMILAR_ORDER",
    "EngineEntry",
    "Role",
    "engine_class",
    "load_engine",
]
