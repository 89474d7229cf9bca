"""Staying signed in: reloads and links to any page keep the session, held in an HTTP-only signed cookie."""

from __future__ import annotations

from typing import Any

from tests.web_ui.browser import screenshot, settled
from tests.web_ui.conftest import PASSWORD, LiveApi, Person

COOKIE = "mlmarket_session"
PAGES = {  # address → the heading a person sees
    "": "Marketplace",
    "predict": "Predict",
    "history": "History",
    "studio": "Training studio",
    "wallet": "Wallet",
    "api_keys": "API keys",
    "admin": "Administration",
}


def signed_in_cookie(page: Any) -> dict[str, Any] | None:
    return next((c for c in page.context.cookies() if c["name"] == COOKIE), None)


def cookie_once_set(page: Any, timeout_ms: int = 15_000) -> dict[str, Any] | None:
    """The sign-in cookie, waiting for it: the page sets it with a trip through /session/start after signing in,
    which may finish after the page asked for has been drawn."""
    for _ in range(timeout_ms // 100):
        cookie = signed_in_cookie(page)
        if cookie is not None:
            return cookie
        page.wait_for_timeout(100)
    return signed_in_cookie(page)


def fill_sign_in(page: Any, email: str, password: str) -> None:
    page.get_by_label("Email").first.fill(email)
    page.get_by_label("Password").first.fill(password)
    page.get_by_role("button", name="Sign in").click()


def test_a_link_to_a_page_asks_to_sign_in_then_opens_that_page(page: Any, ui_url: str, make_person: Any) -> None:
    person: Person = make_person(credits=30)
    page.goto(f"{ui_url}/wallet")
    page.get_by_role("tab", name="Sign in").wait_for()
    page.get_by_text("Sign in to open your wallet.").wait_for()
    settled(page)
    assert page.get_by_text("Page not found").count() == 0
    screenshot(page, "session-01-deep-link-asks-to-sign-in")

    fill_sign_in(page, person.email, PASSWORD)
    page.get_by_role("heading", name="Wallet").wait_for()
    settled(page)
    assert page.url == f"{ui_url}/wallet"
    cookie = cookie_once_set(page)
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    # Page scripts cannot read the token, nor any part of the cookie.
    assert COOKIE not in page.evaluate("document.cookie")
    assert person.token not in page.content()
    screenshot(page, "session-02-wallet-after-sign-in")


def test_every_page_stays_signed_in_across_reloads(page: Any, ui_url: str, live_api: LiveApi) -> None:
    page.goto(ui_url)
    fill_sign_in(page, live_api.admin_email, live_api.admin_password)
    page.get_by_role("heading", name="Marketplace").wait_for()
    settled(page)
    for path, heading in PAGES.items():
        page.goto(f"{ui_url}/{path}")
        page.get_by_role("heading", name=heading).wait_for()
        settled(page)
        page.reload()
        page.get_by_role("heading", name=heading).wait_for()
        settled(page)
        assert page.get_by_role("tab", name="Sign in").count() == 0, path
        # The same page (Predict adds its model to the address: a reload opens it again).
        assert page.url.split("?")[0].rstrip("/") == f"{ui_url}/{path}".rstrip("/")
        screenshot(page, f"session-03-reloaded-{path or 'marketplace'}")


def test_signing_out_clears_the_cookie_and_a_tampered_cookie_is_refused(
    page: Any, ui_url: str, make_person: Any
) -> None:
    person: Person = make_person()
    page.goto(ui_url)
    fill_sign_in(page, person.email, PASSWORD)
    page.get_by_role("heading", name="Marketplace").wait_for()
    settled(page)
    assert cookie_once_set(page) is not None

    page.get_by_test_id("stSidebarNav").get_by_role("link", name="Sign out").click()
    page.get_by_text("You are signed out.").wait_for()
    settled(page)
    assert signed_in_cookie(page) is None
    screenshot(page, "session-04-signed-out")
    page.goto(f"{ui_url}/history")
    page.get_by_role("tab", name="Sign in").wait_for()
    settled(page)

    # A cookie this UI did not sign (an edited one) signs nobody in.
    fill_sign_in(page, person.email, PASSWORD)
    page.get_by_role("heading", name="History").wait_for()
    cookie = cookie_once_set(page)
    assert cookie is not None
    page.context.add_cookies([{**cookie, "value": cookie["value"][:-4] + "0000"}])
    page.reload()
    page.get_by_role("tab", name="Sign in").wait_for()
    settled(page)
