"""The web UI in a real browser: Debian's Chromium, driven by Playwright, against the running UI and API.

Chromium comes from scripts/install_browser.sh (the system's package manager); it
is never downloaded by Playwright. Without it the tests are skipped, and with
CI=true they fail. Screenshots of each page go to test-artifacts/screenshots/.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.web_ui.conftest import APP_FILE, PASSWORD, LiveApi, free_port

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


@pytest.fixture(scope="module")
def ui_url(live_api: LiveApi, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`streamlit run web_ui/streamlit_app.py` pointed at the live API, on a free port."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("web-ui") / "streamlit.log"
    env = {**os.environ, "MLMARKET_API_URL": live_api.url}
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP_FILE),
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/_stcore/health", timeout=2).text == "ok":
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the web UI did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        unavailable(f"{CHROMIUM} is missing: run scripts/install_browser.sh")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed: pip install -e '.[dev]'")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any, ui_url: str) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1100}, accept_downloads=True)
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    page.goto(ui_url)
    yield page
    context.close()


def settled(page: Any) -> None:
    """Waits until Streamlit has finished running the script, then checks no exception box is shown."""
    page.wait_for_timeout(300)
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="detached", timeout=WAIT_MS)
    exceptions = page.locator('[data-testid="stException"]')
    assert exceptions.count() == 0, exceptions.first.inner_text()


def screenshot(page: Any, name: str) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    settled(page)
    # Charts and tables draw on canvases after the page has settled.
    for selector in ('[data-testid="stVegaLiteChart"]', '[data-testid="stDataFrame"]'):
        drawn = page.locator(selector)
        for index in range(drawn.count()):
            box = drawn.nth(index).bounding_box() if drawn.nth(index).is_visible() else None
            if box and box["y"] < page.viewport_size["height"]:  # charts out of sight or in another tab wait
                try:
                    drawn.nth(index).locator("canvas").first.wait_for(timeout=10_000)
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
    page.get_by_role("button", name="Add credits").click()
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
    page.get_by_text("1 credit spent on them").wait_for()
    screenshot(page, "05-history")

    page.get_by_role("combobox", name="Prediction").click()
    page.get_by_role("option", name=re.compile("iris-logistic")).click()
    page.get_by_role("button", name="Download the results (CSV)").wait_for()
    screenshot(page, "06-history-opened")

    sign_out(page)
    screenshot(page, "07-signed-out")


def test_a_bad_csv_shows_the_validation_message(page: Any, live_api: LiveApi) -> None:
    sign_in(page, *_client_with_credits(live_api, 10))
    page.locator(".st-key-use-iris-logistic button").click()
    page.get_by_role("tab", name="A CSV file (batch)").click()
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
        {"name": "bad.csv", "mimeType": "text/csv", "buffer": b"colour,size\nred,3\n"}
    )
    page.get_by_role("button", name=re.compile(r"Pay up to 1 credit and predict")).click()
    page.get_by_text("the CSV header lacks feature column(s)").wait_for()
    screenshot(page, "08-predict-bad-csv")


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
    page.get_by_label("Column to predict").fill("kind")
    page.get_by_role("button", name="Upload", exact=True).click()
    page.get_by_text("60 rows, 3 columns").wait_for()
    screenshot(page, "11-studio-datasets")
    page.get_by_role("tab", name="Train", exact=True).click()
    page.get_by_role("button", name="Start training").click()
    page.get_by_role("button", name="Download the report (PDF)").wait_for(timeout=60_000)
    page.get_by_text("Confusion matrix").or_(page.get_by_text("Publish this model")).first.wait_for()
    screenshot(page, "12-studio-report")
    page.get_by_role("tab", name="My trainings").click()
    page.get_by_text("Train it again").wait_for()
    screenshot(page, "14-studio-my-trainings")


def _client_with_credits(live_api: LiveApi, amount: int) -> tuple[str, str]:
    email = f"browser-{uuid.uuid4().hex[:8]}@example.com"
    httpx.post(f"{live_api.url}/api/v1/auth/register", json={"email": email, "password": PASSWORD})
    token = live_api.token(email, PASSWORD)
    live_api.call(
        "POST", "/wallet/top-ups", token, json={"amount": amount}, headers={"Idempotency-Key": str(uuid.uuid4())}
    )
    return email, PASSWORD
