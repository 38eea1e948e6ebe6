"""The benchmarks' shared header and notes handling (benchmarks/provenance.py), which every results file relies on."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def _provenance() -> ModuleType:
    spec = importlib.util.spec_from_file_location("provenance", ROOT / "benchmarks" / "provenance.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_rewrite_keeps_the_hand_written_notes(tmp_path: Path) -> None:
    p = _provenance()
    path = tmp_path / "r.md"
    p.write_report(path, "# Old\n\n| a |\n| 1 |\n")
    path.write_text(path.read_text() + f"\n{p.NOTES_HEADING}\n\nThe figures mean this.\n")
    text = p.write_report(path, "# New\n\n| a |\n| 2 |\n")
    assert text.startswith("# New") and "| 1 |" not in text
    assert text.count(p.NOTES_HEADING) == 1 and text.rstrip().endswith("The figures mean this.")
    assert path.read_text() == text


def test_every_header_names_its_commit_and_command() -> None:
    lines = _provenance().provenance_lines("python benchmarks/x.py --fast", threads=2)
    keys = [line.split(":", 1)[0] for line in lines]
    assert keys == ["- date", "- machine", "- command", "- commit"]
    commit = lines[3].removeprefix("- commit: ")
    assert commit == "unknown" or len(commit.split()[0]) == 12
    assert "`python benchmarks/x.py --fast`" in lines[2] and "2 threads" in lines[1]
