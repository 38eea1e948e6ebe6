"""Engines by name. Imports are lazy so that serving one engine never pulls in another's dependencies."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from recengine.engines.base import Engine
from recengine.errors import ArtifactError, ConfigError

#: engine name → "module:Class"
ENGINE_CLASSES: dict[str, str] = {
    "popularity": "recengine.engines.popularity:Popularity",
    "ease": "recengine.engines.ease:EASE",
    "transformer": "recengine.engines.transformer.engine:TransformerEngine",
    "neural": "recengine.engines.neural.engine:NeuralEngine",
}


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


__all__ = ["ENGINE_CLASSES", "Engine", "engine_class", "load_engine"]
