"""Accounts in a real browser: the sign-in and register forms say what is wrong in sentences (a mistyped email or a
short password before any request), a taken email leads to the sign-in form, and the API keys page reads in
words: no "None", and a revoked key shown as revoked."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.web_ui.browser import open_page, screenshot, settled, sign_in
from tests.web_ui.conftest import PASSWORD, LiveApi, Person

TAKEN = "This email already has an account. Sign in instead."


def open_register(page: Any) -> Any:
    page.get_by_role("tab", name="Create an account").click()
    return page.get_by_role("tabpanel", name="Create an account")


def fill_register(page: Any, email: str, password: str) -> None:
    form = open_register(page)
    form.get_by_label("Email").fill(email)
    form.get_by_label("Password", exact=True).fill(password)
    form.get_by_label("Repeat the password").fill(password)
    form.get_by_role("button", name="Create my account").click()


def cells(page: Any, grid: Any) -> list[str]:
    """The texts of a table's cells (the grid is drawn on a canvas; its cells are also kept for screen readers)."""
    grid.locator("td").first.wait_for(state="attached")
    settled(page)
    return [c.strip() for c in grid.locator("td").all_inner_texts()]


def test_a_mistyped_email_and_a_short_password_are_refused_before_any_request(page: Any, live_api: LiveApi) -> None:
    fill_register(page, "not-an-email", "short")
    page.get_by_text("An email address has an @, like name@example.com.", exact=True).wait_for()
    page.get_by_text("The password needs at least 8 characters (this one has 5).", exact=True).wait_for()
    settled(page)
    screenshot(page, "accounts-01-register-checks-email-and-password")

    email = f"accounts-{uuid.uuid4().hex[:8]}@example.com"
    fill_register(page, email, "short")
    page.get_by_text("The password needs at least 8 characters (this one has 5).", exact=True).wait_for()
    settled(page)
    assert page.get_by_text("An email address has an @").count() == 0
    # The page did not call the API: the email is still free to register.
    created = httpx.post(f"{live_api.url}/api/v1/auth/register", json={"email": email, "password": PASSWORD})
    assert created.status_code == 201, created.text

    page.get_by_role("tab", name="Sign in", exact=True).click()
    form = page.get_by_role("tabpanel", name="Sign in")
    form.get_by_label("Email").fill("name@example")
    form.get_by_label("Password", exact=True).fill(PASSWORD)
    form.get_by_role("button", name="Sign in", exact=True).click()
    page.get_by_text("This is not an email address: it should read like name@example.com.", exact=True).wait_for()
    settled(page)
    screenshot(page, "accounts-02-sign-in-checks-the-email")


def test_a_taken_email_leads_to_the_sign_in_form(page: Any, make_person: Any) -> None:
    from playwright.sync_api import expect  # here: without Playwright the browser tests are skipped, not broken

    person: Person = make_person()
    fill_register(page, person.email, "another password")
    page.get_by_text(TAKEN, exact=True).wait_for()
    settled(page)
    assert page.get_by_text("already exists").count() == 0
    screenshot(page, "accounts-03-taken-email-offers-sign-in")

    page.get_by_role("button", name="Sign in instead").click()
    expect(page.get_by_role("tab", name="Sign in", exact=True)).to_have_attribute("aria-selected", "true")
    form = page.get_by_role("tabpanel", name="Sign in")
    expect(form.get_by_label("Email")).to_have_value(person.email)
    settled(page)
    screenshot(page, "accounts-04-sign-in-with-the-email-filled-in")
    form.get_by_label("Password", exact=True).fill(person.password)
    form.get_by_role("button", name="Sign in", exact=True).click()
    page.get_by_role("heading", name="Marketplace").wait_for()
    settled(page)


def test_a_wrong_password_reads_as_a_sentence(page: Any, make_person: Any) -> None:
    person: Person = make_person()
    form = page.get_by_role("tabpanel", name="Sign in")
    form.get_by_label("Email").fill(person.email)
    form.get_by_label("Password", exact=True).fill("not the password")
    form.get_by_role("button", name="Sign in", exact=True).click()
    page.get_by_text("Wrong email or password.", exact=True).wait_for()
    settled(page)
    assert page.get_by_text("incorrect email or password").count() == 0
    screenshot(page, "accounts-05-wrong-password")


def test_api_keys_read_in_words_and_a_revoked_key_is_shown_as_revoked(page: Any, make_person: Any) -> None:
    person: Person = make_person()
    sign_in(page, person.email, person.password)
    open_page(page, "API keys")
    page.get_by_label("Name").fill("nightly batch")
    page.get_by_role("button", name="Create the key").click()
    page.get_by_text("Copy the key now").wait_for()
    page.get_by_text("Create a key").click()
    assert page.get_by_label("Name").input_value() == ""  # the form is ready for the next key
    shown = cells(page, page.locator(".st-key-api-keys-active"))
    assert "nightly batch" in shown and "never" in shown and "no expiry" in shown
    assert "None" not in shown
    assert any(cell.endswith(" UTC") for cell in shown)  # when it was created
    screenshot(page, "accounts-06-api-key-created")

    page.get_by_test_id("stCheckbox").get_by_text("Revoke it").click()
    settled(page)
    page.get_by_role("button", name="Revoke", exact=True).click()
    page.get_by_text("Key nightly batch is revoked").wait_for()
    page.get_by_text("You have no active API key.").wait_for()
    assert page.get_by_text("You have no API key yet.").count() == 0
    page.get_by_text("Revoked keys (1)").click()
    revoked = cells(page, page.locator(".st-key-api-keys-revoked"))
    assert "nightly batch" in revoked and "None" not in revoked
    screenshot(page, "accounts-07-api-key-revoked")
