"""Fixtures for the web UI: a live mlmarket API (embedded default, two demo models) and signed-in people.

The API runs in a background thread with uvicorn on a free loopback port, for the
whole session; each test registers its own users, so tests do not see each
other's balances or predictions. The UI reaches it only over HTTP.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from streamlit.testing.v1 import AppTest

from app import migrations
from app.core.db import make_engine
from app.main import create_app
from app.services import demo
from app.store import make_store
from tests.conftest import make_settings
from tests.web_ui import browser as browsing

APP_FILE = Path(__file__).resolve().parents[2] / "web_ui" / "streamlit_app.py"
SERVE_FILE = APP_FILE.with_name("serve.py")
DEMO_MODELS = ["iris-logistic", "diabetes-linear"]
PASSWORD = "correct horse battery"
APP_TIMEOUT = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class LiveApi:
    url: str
    admin_email: str
    admin_password: str

    def token(self, email: str, password: str) -> str:
        r = httpx.post(f"{self.url}/api/v1/auth/token", data={"username": email, "password": password})
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])

    def call(self, method: str, path: str, token: str, headers: dict[str, str] | None = None, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {token}", **(headers or {})}
        r = httpx.request(method, f"{self.url}/api/v1{path}", headers=headers, timeout=30, **kwargs)
        assert r.status_code < 400, r.text
        return r.json()


@pytest.fixture(scope="session")
def live_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    """mlmarket's API with its in-process worker, a migrated SQLite database and the demo models."""
    data_dir = tmp_path_factory.mktemp("web-ui-api")
    settings = make_settings(f"sqlite:///{data_dir / 'mlmarket.db'}", data_dir)
    migrations.upgrade(settings)
    engine = make_engine(settings)
    report = demo.seed(engine, make_store(settings), settings, models=DEMO_MODELS)
    engine.dispose()

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="mlmarket-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the mlmarket API did not start for the web UI tests")
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    previous = os.environ.get("MLMARKET_API_URL")
    os.environ["MLMARKET_API_URL"] = url  # the UI under AppTest reads it on each call
    try:
        yield LiveApi(url, report.credentials.admin_email, report.credentials.admin_password)
    finally:
        if previous is None:
            os.environ.pop("MLMARKET_API_URL", None)
        else:
            os.environ["MLMARKET_API_URL"] = previous
        server.should_exit = True
        thread.join(timeout=30)


@dataclass
class Person:
    email: str
    password: str
    token: str
    user: dict[str, Any]


@pytest.fixture
def make_person(live_api: LiveApi) -> Callable[..., Person]:
    """Registers a fresh client over the API, optionally topped up."""

    def make(credits: int = 0) -> Person:
        email = f"web-{uuid.uuid4().hex[:10]}@example.com"
        r = httpx.post(f"{live_api.url}/api/v1/auth/register", json={"email": email, "password": PASSWORD})
        assert r.status_code == 201, r.text
        token = live_api.token(email, PASSWORD)
        if credits:
            live_api.call(
                "POST",
                "/wallet/top-ups",
                token,
                json={"amount": credits},
                headers={"Idempotency-Key": str(uuid.uuid4())},
            )
        return Person(email, PASSWORD, token, live_api.call("GET", "/users/me", token))

    return make


@pytest.fixture
def admin(live_api: LiveApi) -> Person:
    token = live_api.token(live_api.admin_email, live_api.admin_password)
    return Person(live_api.admin_email, live_api.admin_password, token, live_api.call("GET", "/users/me", token))


def new_app() -> AppTest:
    return AppTest.from_file(str(APP_FILE), default_timeout=APP_TIMEOUT)


@pytest.fixture
def app_as(live_api: LiveApi) -> Callable[..., AppTest]:
    """The UI as a signed-in person, opened on one page (relative to web_ui/, e.g. 'app_pages/wallet.py')."""

    def open_as(person: Person, page: str | None = None) -> AppTest:
        at = new_app()
        at.session_state["token"] = person.token
        at.session_state["user"] = person.user
        at.run()
        if page:
            at.switch_page(page).run()
        return at

    return open_as


def texts(at: AppTest) -> str:
    """Everything a person reads on the page, as one string."""
    parts: list[str] = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "success", "info", "warning", "error"):
        parts.extend(str(element.value) for element in getattr(at, kind))
    parts.extend(str(m.value) for m in at.metric)
    parts.extend(str(m.label) for m in at.metric)
    return "\n".join(parts)


def no_exceptions(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


# -- a real browser (see tests/web_ui/browser.py) --------------------------------------------------------


@pytest.fixture(scope="session")
def ui_url(live_api: LiveApi, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`streamlit run web_ui/serve.py` pointed at the live API, on a free port, shared by every browser test."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("web-ui") / "streamlit.log"
    env = {**os.environ, "MLMARKET_API_URL": live_api.url}
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(SERVE_FILE),
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
    """One Chromium per test module."""
    if not browsing.CHROMIUM.exists():
        browsing.unavailable(f"{browsing.CHROMIUM} is missing: run scripts/install_browser.sh")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        browsing.unavailable("playwright is not installed: pip install -e '.[dev]'")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(browsing.CHROMIUM), args=browsing.CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any, ui_url: str) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1100}, accept_downloads=True)
    context.set_default_timeout(browsing.WAIT_MS)
    page = context.new_page()
    page.goto(ui_url)
    yield page
    context.close()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Names the folder of the browser screenshots, so a person can look at every page."""
    shots = browsing.SCREENSHOTS
    if shots.is_dir() and any(shots.glob("*.png")):
        terminalreporter.write_line(f"web UI screenshots: {shots}")
