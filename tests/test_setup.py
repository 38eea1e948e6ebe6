"""The bootstrap a new user runs: the Makefile's install steps and the package metadata."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _venv_commands(tmp_path: Path, *assignments: str) -> list[str]:
    if shutil.which("make") is None:
        pytest.fail("make is not installed; the README's two commands need it")
    # -n: print, run nothing; -B: as if the venv were out of date, so every install step is shown.
    done = subprocess.run(
        ["make", "-n", "-B", "-C", str(ROOT), "venv", f"VENV={tmp_path / 'venv'}", *assignments],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.splitlines()


def _torch_install(lines: list[str]) -> str:
    found = [line for line in lines if "pip install" in line and "torch==" in line]
    assert len(found) == 1, lines
    return found[0]


def test_torch_comes_from_the_default_index_unless_told(tmp_path: Path) -> None:
    line = _torch_install(_venv_commands(tmp_path))
    assert "torch==2.13.0" in line
    assert "--index-url" not in line and "--extra-index-url" not in line


def test_torch_index_is_a_make_variable(tmp_path: Path) -> None:
    line = _torch_install(_venv_commands(tmp_path, "TORCH_INDEX=https://index.example/cpu"))
    assert line.rstrip().endswith("--index-url https://index.example/cpu")
    # Only torch's own install uses that index: the project's dependencies still come from the default one.
    others = [x for x in _venv_commands(tmp_path, "TORCH_INDEX=https://index.example/cpu") if "-e '.[dev]'" in x]
    assert others and all("index.example" not in x for x in others)


def test_license_is_an_spdx_expression() -> None:
    # A TOML table here makes setuptools print a deprecation block on every install (the first screen a user sees).
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
