"""Without a browser the console's browser tests skip, unless RECENGINE_REQUIRE_BROWSER=1 makes that a failure."""

from __future__ import annotations

import pytest

from tests.console.conftest import _unavailable


def test_a_missing_browser_skips_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECENGINE_REQUIRE_BROWSER", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no Chromium"):
        _unavailable("no Chromium at /nowhere")


def test_a_missing_browser_fails_when_one_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECENGINE_REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.fail.Exception, match="RECENGINE_REQUIRE_BROWSER=1"):
        _unavailable("no Chromium at /nowhere")
