"""Driving the web UI in a real browser: Debian's Chromium through Playwright, never a downloaded browser.

Chromium comes from scripts/install_browser.sh (the system's package manager). Without it the browser tests
are skipped, and with CI=true they fail. Screenshots go to test-artifacts/screenshots/ (ignored by git), one
per step a person would look at. The fixtures (one UI server per run, one browser per module) are in
conftest.py.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
WAIT_MS = 30_000
IRIS_HEADER = "sepal_length_cm,sepal_width_cm,petal_length_cm,petal_width_cm"


def unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: the browser tests must run; see scripts/install_browser.sh)", pytrace=False)
    pytest.skip(reason)


def settled(page: Any) -> None:
    """Waits until Streamlit has finished running the script, then checks no exception box is shown."""
    page.wait_for_timeout(300)
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="detached", timeout=WAIT_MS)
    exceptions = page.locator('[data-testid="stException"]')
    assert exceptions.count() == 0, exceptions.first.inner_text()


def screenshot(page: Any, name: str) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    settled(page)
    # Charts (SVG or canvas) and tables (canvas) are drawn after the page has settled.
    for selector, marks in (
        ('[data-testid="stVegaLiteChart"]', "svg.marks, canvas"),
        ('[data-testid="stDataFrame"]', "canvas"),
    ):
        drawn = page.locator(selector)
        for index in range(drawn.count()):
            box = drawn.nth(index).bounding_box() if drawn.nth(index).is_visible() else None
            if box and box["y"] < page.viewport_size["height"]:  # charts out of sight or in another tab wait
                try:
                    drawn.nth(index).locator(marks).first.wait_for(timeout=10_000)
                except PlaywrightTimeout:
                    print(f"{name}: a {selector} was not drawn within 10 s")
    page.wait_for_timeout(500)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))
    print(f"screenshot: {SCREENSHOTS / name}.png")


def open_page(page: Any, title: str) -> None:
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title).click()
    page.get_by_role("heading", name=title).wait_for()
    settled(page)


def sign_in(page: Any, email: str, password: str) -> None:
    page.get_by_label("Email").first.fill(email)
    page.get_by_label("Password").first.fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Marketplace").wait_for()
    settled(page)


def sign_out(page: Any) -> None:
    page.get_by_test_id("stSidebarNav").get_by_role("link", name="Sign out").click()
    page.get_by_text("You are signed out.").wait_for()
    settled(page)
