"""The experiments view of the console in a real browser (see test_console_browser.py): admin only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.api.gateway_helpers import ADMIN_KEY
from tests.console.conftest import WRITE_KEY, Live
from tests.console.test_console_browser import no_horizontal_overflow, tab_through

pytestmark = pytest.mark.browser


def test_experiments_show_nothing_without_the_admin_key(page: Any, live: Live) -> None:
    page.goto(live.url + "/ui/experiments")
    page.wait_for_selector("#experiments-locked")
    assert page.locator("[data-admin]").count() == 0 and page.locator("#weights-form").count() == 0


def test_experiments_readout_and_weights(page: Any, live: Live, tmp_path: Path) -> None:
    page.goto(live.url + "/ui/experiments")
    page.fill("#admin-key", ADMIN_KEY)
    page.click("#admin-key-save")
    page.wait_for_selector("#weights-form")
    page.fill("#weight-ease", "1")
    page.fill("#weight-transformer", "1")
    page.click("#weights-save")
    page.wait_for_selector("#weights-status:has-text('weights saved')")
    # Traffic for the two arms; every other user clicks the first item shown, quoting the recommendation id.
    clicks: dict[str, int] = {}
    for n, user in enumerate(live.dataset.users.ids[1:41]):
        answer = page.request.get(f"{live.url}/api/v1/recommendations?user_id={user}").json()
        arm = answer["experiment"]["arm"]
        clicks.setdefault(arm, 0)
        if n % 2 == 0:
            event = {"user_id": user, "item_id": answer["items"][0]["item_id"],
                     "recommendation_id": answer["recommendation_id"]}  # fmt: skip
            r = page.request.post(f"{live.url}/api/v1/events", data=event, headers={"X-API-Key": WRITE_KEY})
            assert r.ok, r.text()
            clicks[arm] += 1
    page.reload()
    page.wait_for_selector("#arms-table tr[data-arm]")
    arms = page.eval_on_selector_all("#arms-table tr[data-arm]", "ns => ns.map(n => n.dataset.arm)")
    assert set(arms) == {"ease", "transformer"} == set(clicks)
    for arm, count in clicks.items():  # the readout equals the hand count
        cells = page.eval_on_selector_all(f'#arms-table tr[data-arm="{arm}"] td', "ns => ns.map(n => n.textContent)")
        assert int(cells[4]) == count, cells
        assert cells[5].startswith(f"{100 * count / int(cells[3].split()[0]):.1f} %"), cells
    page.screenshot(path=str(tmp_path / "experiments.png"), full_page=True)
    assert tab_through(page) == []
    page.fill("#weight-ease", "0")
    page.fill("#weight-transformer", "0")
    page.click("#weights-save")
    page.wait_for_selector("#weights-status:has-text('rules decide')")


def test_the_experiments_view_fits_a_phone(chromium: Any, live: Live) -> None:
    context = chromium.new_context(viewport={"width": 375, "height": 700}, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.set_default_timeout(10_000)
    try:
        page.goto(live.url + "/ui/experiments")
        page.fill("#admin-key", ADMIN_KEY)
        page.click("#admin-key-save")
        page.wait_for_selector("#weights-form")
        assert no_horizontal_overflow(page), page.evaluate("document.scrollingElement.scrollWidth")
    finally:
        context.close()
