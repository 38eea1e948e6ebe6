"""A live server with a tiny trained model set, and headless Chromium driven by Playwright.

Without Playwright or Chromium (``/usr/bin/chromium``, Debian's package) the browser tests skip with the reason; under
``RECENGINE_REQUIRE_BROWSER=1`` (``.ci/run`` sets it) they fail instead.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from recengine.data.dataset import Dataset
from recengine.engines.artifact import set_current, version_dir
from recengine.evaluation import evaluate
from tests.api.gateway_helpers import ADMIN_KEY
from tests.engines.conftest import TINY_TRAINING, fitted_engine

WRITE_KEY = "console-write-key-0123456789"
CHROMIUM = Path(os.environ.get("RECENGINE_CHROMIUM", "/usr/bin/chromium"))


def _unavailable(reason: str) -> None:
    if os.environ.get("RECENGINE_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (RECENGINE_REQUIRE_BROWSER=1)")
    pytest.skip(reason)


# Package scope, not session: Playwright's sync API keeps an event loop running in the main thread until it stops,
# and every later asyncio.run() in the suite would then fail ("cannot be called from a running event loop").
@pytest.fixture(scope="package")
def chromium() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright is not installed: pip install playwright (no browser download needed)")
    if not CHROMIUM.is_file():
        _unavailable(f"no Chromium at {CHROMIUM}: apt-get install chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield browser
        browser.close()


@dataclass(frozen=True)
class Live:
    url: str
    dataset: Dataset


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def live(small_dataset: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """uvicorn in a thread on a free port, serving popularity, EASE, the neural engine and a three-epoch transformer
    (a training curve with more than one point); writes (events, items) need ``WRITE_KEY``. One per session:
    a test that changes the server's state (switches, weights) puts it back."""
    import uvicorn

    from recengine.api.app import create_app
    from recengine.settings import load_settings

    root = tmp_path_factory.mktemp("console-artifacts")
    for name in ("popularity", "ease", "transformer", "neural"):
        training = TINY_TRAINING.model_copy(update={"epochs": 3}) if name == "transformer" else None
        engine = fitted_engine(name, small_dataset, root / "mlruns", training=training)
        # What `recengine train` adds: the test figures the engines view shows.
        engine.metrics["test"] = evaluate(engine.score, small_dataset, split="test", ks=(10, 20))
        engine.config["version"] = f"{name[:3]}-1"
        set_current(engine.save(version_dir(root, name, f"{name[:3]}-1")))
    settings = load_settings(
        None,
        serving={
            "artifacts_dir": str(root),
            "events_db": str(root / "events.sqlite3"),
            "admin_api_key": ADMIN_KEY,
            "write_api_key": WRITE_KEY,
            "reload_poll_s": 0,
            # The page asks every engine at once; on a busy 2-core machine the 50 ms default times some out.
            "engine_timeout_ms": 5000,
        },
        data={"dir": str(small_dataset.path)},
        observability={"log_level": "ERROR"},
    )
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the console's test server did not start")
        time.sleep(0.05)
    yield Live(f"http://127.0.0.1:{port}", small_dataset)
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def page(chromium: Any, live: Live) -> Iterator[Any]:
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.set_default_timeout(10_000)
    yield pg
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
