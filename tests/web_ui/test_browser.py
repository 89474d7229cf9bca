"""The web UI in a real browser: Debian's Chromium, driven by Playwright, against the running UI and API.

Chromium comes from scripts/install_browser.sh (the system's package manager); it
is never downloaded by Playwright. Without it the tests are skipped, and with
CI=true they fail. Screenshots of each page go to test-artifacts/screenshots/.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx

from tests.web_ui.browser import IRIS_HEADER, open_page, screenshot, sign_in, sign_out
from tests.web_ui.conftest import PASSWORD, LiveApi


def test_the_ui_answers_its_health_check(ui_url: str) -> None:
    assert httpx.get(f"{ui_url}/_stcore/health").text == "ok"


def test_register_top_up_predict_and_find_it_in_history(page: Any) -> None:
    email = f"browser-{uuid.uuid4().hex[:8]}@example.com"
    page.get_by_role("tab", name="Sign in").wait_for()
    screenshot(page, "01-sign-in")

    page.get_by_role("tab", name="Create an account").click()
    page.get_by_label("Email").nth(1).fill(email)
    page.get_by_label("Full name (optional)").fill("Browser Tester")
    page.get_by_label("Password", exact=True).nth(1).fill(PASSWORD)
    page.get_by_label("Repeat the password").fill(PASSWORD)
    page.get_by_role("button", name="Create my account").click()
    page.get_by_role("heading", name="Marketplace").wait_for()
    page.get_by_text("iris-logistic").first.wait_for()
    screenshot(page, "02-marketplace")

    open_page(page, "Wallet")
    page.get_by_label("Credits to add").fill("50")
    page.get_by_label("Credits to add").press("Tab")
    page.get_by_role("button", name="Add 50 credits").click()
    page.get_by_text("Added 50 credits. New balance: 50 credits.").wait_for()
    screenshot(page, "03-wallet")

    open_page(page, "Marketplace")
    page.locator(".st-key-use-iris-logistic button").click()
    page.get_by_role("heading", name="Predict").wait_for()
    page.get_by_text("Fill in the model's inputs").wait_for()
    for feature, value in zip(IRIS_HEADER.split(","), ("5.1", "3.5", "1.4", "0.2"), strict=True):
        page.get_by_label(feature).fill(value)
    page.get_by_text("Cost: 1 credit \N{MULTIPLICATION SIGN} 1 row = 1 credit").wait_for()
    page.get_by_role("button", name="Pay 1 credit and predict").click()
    page.get_by_role("button", name="Download the results (CSV)").wait_for()
    prediction = page.get_by_test_id("stMetric").filter(has_text="Prediction")
    assert prediction.inner_text().split() == ["Prediction", "setosa"]
    page.get_by_text("Done: the prediction succeeded").wait_for()
    screenshot(page, "04-predict-result")

    open_page(page, "History")
    grid = page.get_by_test_id("stDataFrame").first
    # The grid is drawn on a canvas; its cells are also in a table for screen readers, filled in a moment later.
    grid.locator("td", has_text="iris-logistic v1").first.wait_for(state="attached")
    cells = [c.strip() for c in grid.locator("td").all_inner_texts()]
    assert "iris-logistic v1" in cells and "succeeded" in cells
    assert cells[cells.index("succeeded") + 3] == "1"  # status, rows, rejected, cost
    page.get_by_text("1 credit spent on it").wait_for()
    screenshot(page, "05-history")

    page.get_by_role("combobox", name="Prediction").click()
    page.get_by_role("option", name=re.compile("iris-logistic")).click()
    page.get_by_role("button", name="Download the results (CSV)").wait_for()
    screenshot(page, "06-history-opened")

    sign_out(page)
    screenshot(page, "07-signed-out")


def test_admin_pages_show_users_and_the_ledger(page: Any, live_api: LiveApi) -> None:
    sign_in(page, live_api.admin_email, live_api.admin_password)
    open_page(page, "Admin")
    page.get_by_text("Credit a user").wait_for()
    screenshot(page, "09-admin-users")
    page.get_by_role("tab", name="Ledger").click()
    page.get_by_text("The ledger balances").wait_for()
    screenshot(page, "10-admin-ledger")
    page.get_by_role("tab", name="Workers and queues").click()
    page.get_by_text("Outbox unsent").wait_for()
    page.get_by_text("tasks.train").first.wait_for(state="attached")
    screenshot(page, "13-admin-queues")


def test_studio_trains_a_model_and_shows_its_report(page: Any, live_api: LiveApi) -> None:
    from tests.web_ui.test_studio import flowers_csv

    sign_in(page, *_client_with_credits(live_api, 50))
    open_page(page, "Training studio")
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
        {"name": "flowers.csv", "mimeType": "text/csv", "buffer": flowers_csv()}
    )
    # The column to predict is picked from the file's own columns; the last one is offered first.
    page.get_by_role("combobox", name="Column to predict").wait_for()
    assert page.get_by_role("combobox", name="Column to predict").input_value() == "kind"
    page.get_by_text("CSV file (at most 5 MB)").wait_for()
    page.get_by_role("button", name="Add this dataset").click()
    page.get_by_text("60 rows, 3 columns").wait_for()
    screenshot(page, "11-studio-datasets")
    page.get_by_role("tab", name="Train", exact=True).click()
    # The price is shown before paying, on the button itself.
    page.get_by_text("Cost: 10 credits").wait_for()
    page.get_by_role("button", name="Pay 10 credits and start training").click()
    page.get_by_role("button", name="Download the report (PDF)").wait_for(timeout=60_000)
    page.get_by_text("Confusion matrix").or_(page.get_by_text("Publish this model")).first.wait_for()
    page.get_by_text("held-out test rows the model never saw").first.wait_for()
    screenshot(page, "12-studio-report")
    page.get_by_role("tab", name="My trainings").click()
    page.get_by_text("Train it again").wait_for()
    screenshot(page, "14-studio-my-trainings")

    # The wallet names the charge by what it paid for.
    open_page(page, "Wallet")
    grid = page.get_by_test_id("stDataFrame").first
    grid.locator("td", has_text="Training charge").first.wait_for(state="attached")
    assert "Prediction charge" not in grid.locator("td").all_inner_texts()
    screenshot(page, "15-wallet-training-charge")


def _client_with_credits(live_api: LiveApi, amount: int) -> tuple[str, str]:
    email = f"browser-{uuid.uuid4().hex[:8]}@example.com"
    httpx.post(f"{live_api.url}/api/v1/auth/register", json={"email": email, "password": PASSWORD})
    token = live_api.token(email, PASSWORD)
    live_api.call(
        "POST", "/wallet/top-ups", token, json={"amount": amount}, headers={"Idempotency-Key": str(uuid.uuid4())}
    )
    return email, PASSWORD
