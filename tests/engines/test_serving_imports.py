"""The serving side of every engine imports no training code: a server needs neither Lightning nor MLflow."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import recengine.engines

ENGINES = Path(recengine.engines.__file__).parent
SERVING_FILES = sorted(
    [
        *ENGINES.glob("*/engine.py"),
        *(ENGINES / name for name in ("base.py", "popularity.py", "ease.py", "ranker.py")),
    ]
)
TRAINING_MODULES = ("lightning", "mlflow", "recengine.training")


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", SERVING_FILES, ids=lambda p: str(p.relative_to(ENGINES)))
def test_serving_files_import_no_training_code(path: Path) -> None:
    bad = {n for n in imported(path) if any(n == m or n.startswith(f"{m}.") for m in TRAINING_MODULES)}
    assert not bad, f"{path.name} imports {sorted(bad)}"


def test_every_engine_file_is_checked() -> None:
    assert {p.parent.name for p in ENGINES.glob("*/engine.py")} == {"transformer", "neural"}
