"""The real application under uvicorn, with a "transformer" whose behaviour a test switches from outside.

    python tests/reliability/fault_server.py --port 8123      (settings from RECENGINE_* as for ``serve``)

The stand-in transformer is the trained EASE model behind a switch: the file named by RECENGINE_FAULT_FILE holds
``ok``, ``raise`` or ``hang <seconds>`` and is read on every call, so a test flips the fault while load runs.
Everything else — routing, breakers, fallback, cache, events, metrics — is the production code path of
``create_app``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn

from recengine.api.app import create_app
from recengine.engines import load_engine
from recengine.engines.artifact import current_dir
from recengine.settings import load_settings


class SwitchedEngine:
    """Delegates to ``inner`` unless the switch file says to fail or to hang."""

    def __init__(self, inner: Any, switch: Path) -> None:
        self._inner = inner
        self._switch = switch
        self.name = "transformer"
        self.needs_history = inner.needs_history
        self.config = {**inner.config, "version": "switched-" + inner.version}

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._inner, attr)

    @property
    def version(self) -> str:
        return str(self.config["version"])

    def _fault(self) -> None:
        try:
            mode = self._switch.read_text().split()
        except FileNotFoundError:
            return
        if mode and mode[0] == "raise":
            raise RuntimeError("injected engine failure")
        if mode and mode[0] == "hang":
            time.sleep(float(mode[1]) if len(mode) > 1 else 5.0)

    def recommend(self, *args: Any, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
        self._fault()
        return self._inner.recommend(*args, **kwargs)  # type: ignore[no-any-return]

    def similar_items(self, *args: Any, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
        self._fault()
        return self._inner.similar_items(*args, **kwargs)  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    settings = load_settings()
    source = current_dir(settings.serving.artifacts_dir, "ease")
    if source is None:
        raise SystemExit(f"no ease model under {settings.serving.artifacts_dir}")
    switch = Path(os.environ.get("RECENGINE_FAULT_FILE", "/nonexistent/recengine-fault"))
    switched = SwitchedEngine(load_engine(source), switch)
    app = create_app(settings, engines={"transformer": switched})  # type: ignore[dict-item]
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
