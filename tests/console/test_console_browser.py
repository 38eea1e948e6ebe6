"""The web console in a real browser (headless Chromium through Playwright) against a live server.

Screenshots of each state go to the test's temporary directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.api.gateway_helpers import ADMIN_KEY
from tests.console.conftest import WRITE_KEY, Live

pytestmark = pytest.mark.browser

#: What can take keyboard focus (visible ones only are counted).
FOCUSABLE = (
    "a[href], button:not([disabled]), input:not([type=hidden]), select, textarea, [tabindex]:not([tabindex='-1'])"
)


def long_history_user(live: Live) -> str:
    """A user with a long history (the router sends them to the transformer) that leaves most of the catalogue
    unseen (the longest histories hold every item, and nothing is left to recommend)."""
    seqs = live.dataset.sequences(max_split=2)
    fits = [u for u in range(1, live.dataset.n_users + 1) if 20 <= len(seqs[u]) <= 40]
    return live.dataset.users.ids[fits[0]]


def column_items(page: Any, engine: str) -> list[str]:
    items: list[str] = page.eval_on_selector_all(
        f'.column[data-engine="{engine}"] li[data-item]', "nodes => nodes.map(n => n.dataset.item)"
    )
    return items


def open_user(page: Any, live: Live, user: str) -> None:
    page.goto(live.url + "/ui")
    page.fill("#user-query", user)
    page.click("#user-search")
    page.click(f'#user-results button[data-user="{user}"]')
    page.wait_for_selector('.column[data-engine="transformer"] li[data-item]')


def no_horizontal_overflow(page: Any) -> bool:
    fits: bool = page.evaluate("document.scrollingElement.scrollWidth <= window.innerWidth")
    return fits


def test_a_user_their_lists_an_event_and_neighbours(page: Any, live: Live, tmp_path: Path) -> None:
    user = long_history_user(live)
    open_user(page, live, user)
    # Every loaded engine has a column with a list, and the router's own answer is there too.
    for engine in ("router", "popularity", "ease", "transformer", "neural"):
        assert len(column_items(page, engine)) == 10, engine
    assert page.text_content("#routing-engine") == "transformer"
    assert "rule:long_history" in page.text_content("#routing")
    assert "answered by transformer" in page.text_content('.column[data-engine="router"] .answer')
    history = page.eval_on_selector_all("#history li[data-item]", "nodes => nodes.map(n => n.dataset.item)")
    assert (
        history[-1]
        == live.dataset.items.ids.ids[live.dataset.sequences(max_split=2)[live.dataset.users.index(user)][-1]]
    )
    # Items in more than one engine's list are highlighted.
    overlapping = set(column_items(page, "ease")) & set(column_items(page, "transformer"))
    highlighted = set(
        page.eval_on_selector_all('.column[data-engine="ease"] li.overlap', "ns => ns.map(n => n.dataset.item)")
    )
    assert highlighted >= overlapping
    page.screenshot(path=str(tmp_path / "user.png"), full_page=True)

    # Post an event for the transformer's first item: the history grows and that column changes at once.
    before = column_items(page, "transformer")
    page.click(f'.column[data-engine="transformer"] li[data-item="{before[0]}"] button')  # fills the event form
    assert page.input_value("#event-item") == before[0]
    page.click("#event-submit")  # the server wants a write key: refused, nothing stored
    page.wait_for_selector("#event-status.error")
    assert "X-API-Key" in page.text_content("#event-status")
    assert column_items(page, "transformer") == before
    page.fill("#write-key", WRITE_KEY)
    page.click("#event-submit")
    page.wait_for_selector("#event-changes")
    assert "transformer" in page.text_content("#event-changes")
    after = column_items(page, "transformer")
    assert after != before and before[0] not in after  # a seen item is not recommended again
    assert page.eval_on_selector_all("#history li[data-item]", "ns => ns.map(n => n.dataset.item)")[-1] == before[0]
    assert page.locator('.column[data-engine="transformer"] .badge.new').count() >= 1
    page.screenshot(path=str(tmp_path / "after-event.png"), full_page=True)

    # The item clicked above opened its neighbours.
    assert page.is_visible("#similar-panel")
    neighbours = page.eval_on_selector_all("#similar li[data-item]", "ns => ns.map(n => n.dataset.item)")
    assert len(neighbours) == 10 and before[0] not in neighbours
    assert "fallback" not in page.text_content("#similar-meta")
    page.screenshot(path=str(tmp_path / "similar.png"), full_page=True)


def test_random_user_opens_a_user(page: Any, live: Live) -> None:
    page.goto(live.url + "/ui")
    page.click("#random-user")
    page.wait_for_selector(".column li[data-item]")
    assert page.text_content("#user-id") in set(live.dataset.users.ids[1:])


def test_engines_view(page: Any, live: Live, tmp_path: Path) -> None:
    user = long_history_user(live)
    page.request.get(f"{live.url}/api/v1/recommendations?user_id={user}")  # something for the live figures
    page.goto(live.url + "/ui/engines")
    page.wait_for_selector('#engines-table tr[data-engine="transformer"]')
    row = page.text_content('#engines-table tr[data-engine="transformer"]')
    assert "tra-1" in row and "closed" in row
    page.wait_for_selector("#metrics-table th:has-text('transformer')")
    ndcg = page.text_content("#metrics-table tr:has(th:text-is('test ndcg@10')) td:nth-child(4)")
    assert 0 < float(ndcg) <= 1  # the transformer's test figure, from its metrics.json
    page.wait_for_selector("#curves svg polyline[data-engine='transformer']")
    assert page.locator("#curves svg circle").count() >= 3 + 1 + 1  # the transformer's epochs, one point each other
    assert page.text_content("#stat-total dd") not in ("", "0")
    assert "%" in page.text_content("#stat-cache dd")
    page.screenshot(path=str(tmp_path / "engines.png"), full_page=True)


def test_admin_controls_only_with_an_accepted_key(page: Any, live: Live) -> None:
    page.goto(live.url + "/ui/engines")
    page.wait_for_selector('#engines-table tr[data-engine="ease"]')
    assert page.locator("[data-admin]").count() == 0 and page.locator("#admin-reload").count() == 0
    page.fill("#admin-key", "not-the-key")
    page.click("#admin-key-save")
    page.wait_for_selector("#admin-key-status:has-text('not accepted')")
    assert page.locator("[data-admin]").count() == 0
    assert page.evaluate("sessionStorage.getItem('recengine.adminKey')") is None

    page.fill("#admin-key", ADMIN_KEY)
    page.click("#admin-key-save")
    page.wait_for_selector("#admin-reload")
    page.click('[data-toggle="ease"]')
    page.wait_for_selector('#engines-table tr[data-engine="ease"] td:nth-child(2):has-text("no")')
    page.click('[data-toggle="ease"]')  # back on, for the other tests
    page.wait_for_selector('#engines-table tr[data-engine="ease"] td:nth-child(2):has-text("yes")')
    page.click("#admin-reload")
    page.wait_for_selector("#admin-status:has-text('unchanged')")
    page.reload()  # the key lives in this tab's sessionStorage
    page.wait_for_selector("#admin-reload")
    page.click("#admin-key-forget")
    assert page.locator("[data-admin]").count() == 0
    # A fresh tab has no key: nothing of admin.
    other = page.context.browser.new_page()
    other.goto(live.url + "/ui/engines")
    other.wait_for_selector('#engines-table tr[data-engine="ease"]')
    assert other.locator("[data-admin]").count() == 0
    other.close()


def tab_through(page: Any, limit: int = 400) -> list[str]:
    """Press Tab until focus comes back round; mark every element reached. Returns the unreached visible controls."""
    page.evaluate("document.activeElement && document.activeElement.blur()")
    first = None
    for _ in range(limit):
        page.keyboard.press("Tab")
        token = page.evaluate(
            """() => { const e = document.activeElement; if (!e || e === document.body) return null;
                       if (!e.dataset.tabSeen) e.dataset.tabSeen = String(Math.random()); return e.dataset.tabSeen; }"""
        )
        if token is None:
            continue
        if first is None:
            first = token
        elif token == first:
            break
    missed: list[str] = page.evaluate(
        """(sel) => [...document.querySelectorAll(sel)]
             .filter(e => e.getClientRects().length && getComputedStyle(e).visibility !== 'hidden')
             .filter(e => !e.closest('[hidden]'))
             .filter(e => !e.dataset.tabSeen)
             .map(e => e.outerHTML.slice(0, 120))""",
        FOCUSABLE,
    )
    return missed


def test_every_control_is_reachable_with_the_keyboard(page: Any, live: Live) -> None:
    user = long_history_user(live)
    page.goto(live.url + "/ui")
    # Keyboard only: type in the search box, Enter, Tab to the result, Enter.
    page.focus("#user-query")
    page.keyboard.type(user)
    page.keyboard.press("Enter")
    page.wait_for_selector(f'#user-results button[data-user="{user}"]')
    page.keyboard.press("Tab")  # Search
    page.keyboard.press("Tab")  # Random user
    page.keyboard.press("Tab")  # the first result
    assert page.evaluate("document.activeElement.dataset.user") is not None
    page.keyboard.press("Enter")
    page.wait_for_selector('.column[data-engine="transformer"] li[data-item]')
    page.focus("#history li[data-item] button")
    page.keyboard.press("Enter")  # neighbours of a history item
    page.wait_for_selector("#similar li[data-item]")
    assert tab_through(page) == []

    page.goto(live.url + "/ui/engines")
    page.wait_for_selector("#metrics-table th:has-text('transformer')")
    page.fill("#admin-key", ADMIN_KEY)
    page.keyboard.press("Enter")
    page.wait_for_selector("#admin-reload")
    assert tab_through(page) == []


def test_a_phone_sized_viewport_has_no_horizontal_overflow(chromium: Any, live: Live, tmp_path: Path) -> None:
    context = chromium.new_context(viewport={"width": 375, "height": 700}, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.set_default_timeout(10_000)
    try:
        open_user(page, live, long_history_user(live))
        first = column_items(page, "ease")[0]
        page.click(f'.column[data-engine="ease"] li[data-item="{first}"] button')
        page.wait_for_selector("#similar li[data-item]")
        assert no_horizontal_overflow(page), page.evaluate("document.scrollingElement.scrollWidth")
        page.screenshot(path=str(tmp_path / "phone-user.png"), full_page=True)
        page.goto(live.url + "/ui/engines")
        page.wait_for_selector("#curves svg")
        page.fill("#admin-key", ADMIN_KEY)
        page.click("#admin-key-save")
        page.wait_for_selector("#admin-reload")
        assert no_horizontal_overflow(page), page.evaluate("document.scrollingElement.scrollWidth")
        page.screenshot(path=str(tmp_path / "phone-engines.png"), full_page=True)
    finally:
        context.close()
