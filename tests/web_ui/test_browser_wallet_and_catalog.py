"""The wallet and the catalog in a real browser: amounts refused in words, one top-up per click and none from
Enter, banners that do not linger; authors by name, a sensible order, and a word when a search finds nothing."""

from __future__ import annotations

from typing import Any

from tests.web_ui.browser import open_page, screenshot, settled
from tests.web_ui.conftest import PASSWORD, LiveApi, Person
from tests.web_ui.test_browser_session import fill_sign_in


def signed_in(page: Any, ui_url: str, person: Person, path: str, heading: str) -> None:
    page.goto(f"{ui_url}/{path}")
    fill_sign_in(page, person.email, PASSWORD)
    page.get_by_role("heading", name=heading).wait_for()
    settled(page)


def ledger_cells(page: Any) -> list[str]:
    grid = page.get_by_test_id("stDataFrame").first
    grid.locator("td").first.wait_for(state="attached")
    return [c.strip() for c in grid.locator("td").all_inner_texts()]


def test_top_ups_refuse_bad_amounts_in_words_and_credit_once_per_click(
    page: Any, ui_url: str, make_person: Any, live_api: LiveApi
) -> None:
    person: Person = make_person()
    signed_in(page, ui_url, person, "wallet", "Wallet")
    field = page.get_by_label("Credits to add")
    for amount, words in (("0", "Enter at least 1 credit (0 cannot be added)."), ("-5", "(-5 cannot be added)")):
        field.fill(amount)
        field.press("Tab")
        page.get_by_text(words).wait_for()
        assert page.get_by_role("button", name="Add credits").is_disabled()
    screenshot(page, "wallet-01-amount-refused-in-words")

    # Enter only confirms the number; the click pays, once.
    field.fill("50")
    field.press("Enter")
    page.get_by_role("button", name="Add 50 credits").wait_for()
    settled(page)
    assert live_api.call("GET", "/wallet", person.token)["balance"] == 0
    page.get_by_role("button", name="Add 50 credits").click()
    page.get_by_text("Added 50 credits. New balance: 50 credits.").wait_for()
    settled(page)
    assert live_api.call("GET", "/wallet", person.token)["balance"] == 50
    screenshot(page, "wallet-02-one-top-up")

    # The banner belongs to that top-up: the next change of the amount clears it.
    field.fill("20")
    field.press("Tab")
    page.get_by_role("button", name="Add 20 credits").wait_for()
    page.get_by_text("Added 50 credits.").wait_for(state="detached")
    settled(page)
    assert live_api.call("GET", "/wallet", person.token)["balance"] == 50


def test_the_catalog_shows_authors_by_name_in_a_sensible_order(
    page: Any, ui_url: str, make_person: Any, live_api: LiveApi
) -> None:
    person: Person = make_person()
    signed_in(page, ui_url, person, "", "Marketplace")
    page.get_by_text("iris-logistic").first.wait_for()
    bylines = page.get_by_text("By ", exact=False).filter(has_text="published").all_inner_texts()
    assert bylines and not any("@" in b for b in bylines)
    page.get_by_role("combobox", name="Sort by").click()
    options = page.get_by_role("option").all_inner_texts()
    assert {"Recommended", "Newest"} <= set(options)
    page.get_by_role("option", name="Newest").click()
    settled(page)
    screenshot(page, "catalog-01-newest-first")

    search = page.get_by_role("textbox", name="Search")
    search.fill("no model is called this")
    search.press("Enter")
    page.get_by_text("No model matches “no model is called this”.").wait_for()
    settled(page)
    screenshot(page, "catalog-02-empty-search")

    # Predict opens on a recommended model, not a scratch one.
    open_page(page, "Predict")
    assert "test" not in page.get_by_role("combobox", name="Model").inner_text().split(" · ")[0]
