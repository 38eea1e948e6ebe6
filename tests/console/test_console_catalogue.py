"""The catalogue view of the console in a real browser (see test_console_browser.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.console.conftest import WRITE_KEY, Live
from tests.console.test_console_browser import no_horizontal_overflow, tab_through

pytestmark = pytest.mark.browser


def result_ids(page: Any) -> list[str]:
    ids: list[str] = page.eval_on_selector_all("#item-results tr[data-item]", "ns => ns.map(n => n.dataset.item)")
    return ids


def test_catalogue_search_neighbours_add_and_retire(page: Any, live: Live, tmp_path: Path) -> None:
    items = live.dataset.items
    word = str(items.titles[1]).split()[0]  # type: ignore[index]
    page.goto(live.url + "/ui/catalogue")
    page.fill("#item-query", word)
    page.click("#item-search")
    page.wait_for_selector("#item-results tr[data-item]")
    found = result_ids(page)
    assert items.ids.ids[1] in found
    page.click(f'#item-results tr[data-item="{items.ids.ids[1]}"] button')
    page.wait_for_selector("#item-similar li[data-item]")
    assert len(page.locator("#item-similar li[data-item]").all()) == 10

    # A new item in an existing item's categories: refused without the write key, then stored and searchable.
    category = items.categories[1][0]  # type: ignore[index]
    page.fill("#new-item-id", "console-new-1")
    page.fill("#new-item-title", "Console Test Item")
    page.fill("#new-item-categories", category)
    page.click("#item-save")  # no write key yet: refused, nothing stored
    page.wait_for_selector("#item-form-status.error")
    assert "X-API-Key" in page.text_content("#item-form-status")
    page.fill("#catalogue-write-key", WRITE_KEY)
    page.click("#item-save")
    page.wait_for_selector("#item-id:text-is('console-new-1')")
    page.wait_for_selector("#item-details dd:has-text('Console Test Item')")
    # The neural engine placed it from its metadata at once: it has neighbours, in its category mostly.
    page.wait_for_selector("#item-similar li[data-item]")
    assert "neural" in page.text_content("#item-similar-meta")
    page.fill("#item-query", "console-new")
    page.click("#item-search")
    page.wait_for_selector('#item-results tr[data-item="console-new-1"]')
    page.screenshot(path=str(tmp_path / "catalogue.png"), full_page=True)

    page.click('#item-results tr[data-item="console-new-1"] button')
    page.wait_for_selector("#item-retire:visible")
    page.click("#item-retire")
    page.wait_for_selector("#item-status:has-text('retired')")
    page.wait_for_function("!document.querySelector('#item-results tr[data-item=\"console-new-1\"]')")
    page.select_option("#item-available", "false")
    page.click("#item-search")
    page.wait_for_selector('#item-results tr[data-item="console-new-1"]')


def test_the_catalogue_fits_a_phone_and_the_keyboard(chromium: Any, live: Live) -> None:
    context = chromium.new_context(viewport={"width": 375, "height": 700}, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.set_default_timeout(10_000)
    try:
        page.goto(live.url + "/ui/catalogue")
        page.wait_for_selector("#item-results tr[data-item]")
        page.click("#item-results tr[data-item] button")
        page.wait_for_selector("#item-similar li[data-item]")
        assert no_horizontal_overflow(page), page.evaluate("document.scrollingElement.scrollWidth")
        assert tab_through(page) == []
    finally:
        context.close()
