"""The model artifact: a directory an engine can be rebuilt from, with no code but ours and no pickle.

    weights.safetensors   named tensors
    config.json           {"engine", "format_version", "version", "created", "dataset_hash", "hyper_parameters", …}
    vocab.json            {"item_ids": [...], "titles": [...]|null, "categories": [[...]]|null}  (index 0 = padding)
    metrics.json          training / validation / test metrics

``read_artifact`` checks every file and the declared tensor shapes, and raises :class:`ArtifactError` that names the
directory and what is wrong.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from recengine.data.dataset import IdMap, ItemCatalog
from recengine.errors import ArtifactError

FORMAT_VERSION = 1
FILES = ("weights.safetensors", "config.json", "vocab.json", "metrics.json")


@dataclass
class Artifact:
    engine: str
    tensors: dict[str, torch.Tensor]
    config: dict[str, Any]
    items: ItemCatalog
    metrics: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def version(self) -> str:
        return str(self.config.get("version", "unversioned"))


def new_version() -> str:
    """Sortable, readable model version: UTC time to the millisecond."""
    now = time.time()
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{int(now * 1000) % 1000:03d}"


def write_artifact(
    path: Path,
    engine: str,
    tensors: dict[str, torch.Tensor],
    config: dict[str, Any],
    items: ItemCatalog,
    metrics: dict[str, Any] | None = None,
) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    shapes = {name: list(t.shape) for name, t in tensors.items()}
    full_config = {
        "format_version": FORMAT_VERSION,
        "version": config.get("version") or new_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **config,
        "engine": engine,
        "n_items": items.n_items,
        "tensor_shapes": shapes,
    }
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path / "weights.safetensors"))
    vocab = {
        "item_ids": items.ids.ids,
        "titles": items.titles,
        "categories": items.categories,
        "numeric": {k: v.tolist() for k, v in items.numeric.items()},
    }
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "metrics.json").write_text(json.dumps(metrics or {}, indent=2, sort_keys=True))
    # config.json last: a directory with a config.json is complete.
    (path / "config.json").write_text(json.dumps(full_config, indent=2, sort_keys=True))
    return path


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{path.parent}: missing {path.name}; not a complete model artifact") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc})") from None


def read_artifact(path: Path, expect_engine: str | None = None) -> Artifact:
    import numpy as np

    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"{path}: model directory not found")
    config = _read_json(path / "config.json")
    if not isinstance(config, dict) or "engine" not in config:
        raise ArtifactError(f"{path / 'config.json'}: no 'engine' key")
    if config.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{path / 'config.json'}: format_version {config.get('format_version')!r} is not supported "
            f"(expected {FORMAT_VERSION})"
        )
    if expect_engine is not None and config["engine"] != expect_engine:
        raise ArtifactError(f"{path}: artifact is for engine {config['engine']!r}, not {expect_engine!r}")
    vocab = _read_json(path / "vocab.json")
    metrics = _read_json(path / "metrics.json")
    weights = path / "weights.safetensors"
    if not weights.is_file():
        raise ArtifactError(f"{path}: missing weights.safetensors; not a complete model artifact")
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{weights}: cannot read weights ({exc})") from None
    for name, shape in (config.get("tensor_shapes") or {}).items():
        if name not in tensors:
            raise ArtifactError(f"{weights}: tensor {name!r} is missing")
        if list(tensors[name].shape) != list(shape):
            raise ArtifactError(
                f"{weights}: tensor {name!r} has shape {list(tensors[name].shape)}, config.json says {shape}"
            )
    try:
        ids = IdMap(vocab["item_ids"])
        numeric = {k: np.asarray(v, dtype=np.float32) for k, v in (vocab.get("numeric") or {}).items()}
        items = ItemCatalog(ids=ids, titles=vocab.get("titles"), categories=vocab.get("categories"), numeric=numeric)
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{path / 'vocab.json'}: malformed ({exc})") from None
    if int(config.get("n_items", len(ids))) != len(ids):
        raise ArtifactError(f"{path}: vocab.json has {len(ids)} items, config.json says {config.get('n_items')}")
    return Artifact(engine=config["engine"], tensors=tensors, config=config, items=items, metrics=metrics, path=path)


def require(artifact: Artifact, name: str, shape: tuple[int | None, ...]) -> torch.Tensor:
    """The named tensor, checked against an expected shape (None = any size on that axis)."""
    t = artifact.tensors.get(name)
    if t is None:
        raise ArtifactError(f"{artifact.path}: weights.safetensors has no tensor {name!r}")
    if len(t.shape) != len(shape) or any(e is not None and e != a for e, a in zip(shape, t.shape, strict=False)):
        raise ArtifactError(
            f"{artifact.path}: tensor {name!r} has shape {list(t.shape)}, expected "
            f"{['*' if e is None else e for e in shape]}"
        )
    return t


# ---- the artifacts folder: <root>/<engine>/<version>/ plus <root>/<engine>/CURRENT naming the served version ----
def version_dir(root: Path, engine: str, version: str | None = None) -> Path:
    return Path(root) / engine / (version or new_version())


def set_current(model_dir: Path) -> None:
    """Point ``<root>/<engine>/CURRENT`` at ``model_dir`` atomically (write, then rename)."""
    import os

    model_dir = Path(model_dir)
    pointer = model_dir.parent / "CURRENT"
    tmp = pointer.with_suffix(".tmp")
    tmp.write_text(model_dir.name + "\n")
    os.replace(tmp, pointer)


def current_dir(root: Path, engine: str) -> Path | None:
    """The served version's directory of ``engine`` under ``root``, or None when there is none."""
    pointer = Path(root) / engine / "CURRENT"
    if not pointer.is_file():
        return None
    name = pointer.read_text().strip()
    path = pointer.parent / name
    return path if name and path.is_dir() else None
