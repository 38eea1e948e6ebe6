"""One measurement in a fresh process: ``python SCRIPT --one ARGS…`` prints ``RESULT <json>`` as its last result line.

    row = child_result(__file__, ["beauty", "ease"])     # in the parent; the child runs main() → run_one(...)

A fresh process per measurement makes its peak RSS its own and keeps one measurement's allocations from the next.
A child that fails or prints no result stops the benchmark with its output's tail, not a half-filled table.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any


def child_result(script: str, args: Sequence[str], env: Mapping[str, str] | None = None) -> Any:
    proc = subprocess.run(
        [sys.executable, script, "--one", *args], capture_output=True, text=True, env=env, check=False
    )
    result = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not result:
        print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
        sys.exit(f"{' '.join(args)} failed (exit {proc.returncode})")
    return json.loads(result[-1].removeprefix("RESULT "))
