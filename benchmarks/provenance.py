"""Where a results file's figures come from: date, machine, command and commit, written the same way by every
benchmark script, and hand-written notes kept apart from what a script produced.

    lines = provenance_lines("python benchmarks/ann.py --items 1000000", threads=1)
    write_report(Path("benchmarks/results/ann.md"), generated_text)   # keeps the file's hand-written section

A results file is the script's output followed, optionally, by one section that starts with ``NOTES_HEADING``: a
person's reading of the figures. The script rewrites everything above it and keeps that section as it is, so a
rerun never silently drops or passes off a note as measured.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTES_HEADING = "## Notes (hand-written, not produced by the script)"


def commit() -> str:
    """The checkout's commit, marked ``+uncommitted`` when tracked files other than results differ from it;
    ``unknown`` outside git."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        # The results files themselves do not count: a script that has just written one is still at this commit.
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!benchmarks/results"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + (" +uncommitted changes" if dirty else "")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine(threads: int | None = None) -> str:
    import torch

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    used = f", {threads} threads" if threads is not None else ""
    return (
        f"{platform.machine()}, {os.cpu_count()} CPU cores ({cpu_model()}){used}, Python "
        f"{platform.python_version()}, torch {torch.__version__}; load average at the end {load}"
    )


def provenance_lines(command: str, threads: int | None = None) -> list[str]:
    """The header bullet lines every results file starts with."""
    return [
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- machine: {machine(threads)}",
        f"- command: `{command.strip()}`",
        f"- commit: {commit()}",
    ]


def hand_written_notes(path: Path) -> str:
    """The hand-written section of an existing results file ('' when it has none)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return ""
    at = text.find(NOTES_HEADING)
    return text[at:].strip() + "\n" if at >= 0 else ""


def write_report(path: Path, generated: str) -> str:
    """Write ``generated`` to ``path``, followed by the file's hand-written section if it had one; returns the text."""
    notes = hand_written_notes(path)
    text = generated.rstrip() + "\n" + (f"\n{notes}" if notes else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text
