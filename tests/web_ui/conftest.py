"""Fixtures for the web UI: a live mlmarket API (embedded default, two demo models) and signed-in people.

The API runs in a background thread with uvicorn on a free loopback port, for the
whole session; each test registers its own users, so tests do not see each
other's balances or predictions. The UI reaches it only over HTTP.
"""

from __future__ import annotations

import os
import socket
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

APP_FILE = Path(__file__).resolve().parents[2] / "web_ui" / "streamlit_app.py"
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


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Names the folder of the browser screenshots, so a person can look at every page."""
    from tests.web_ui.test_browser import SCREENSHOTS

    if SCREENSHOTS.is_dir() and any(SCREENSHOTS.glob("*.png")):
        terminalreporter.write_line(f"web UI screenshots: {SCREENSHOTS}")
