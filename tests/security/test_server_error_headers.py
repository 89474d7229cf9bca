"""An unexpected error's 500 answer is JSON without a traceback and carries the same safety headers as every other
answer, although Starlette sends it from outside the app's own middleware."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.main import create_app
from tests.conftest import make_settings

pytestmark = pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)

BROKEN = "/api/v1/test-only-broken"
SECRET_TEXT = "a bug's own words, which no client may read"


def with_broken_route(settings: Settings) -> FastAPI:
    app = create_app(settings)

    async def broken() -> None:
        raise RuntimeError(SECRET_TEXT)

    app.add_api_route(BROKEN, broken, methods=["GET"])
    return app


@pytest.fixture
def broken_client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(with_broken_route(settings), raise_server_exceptions=False) as client:
        yield client


def assert_safety_headers(headers: httpx.Headers) -> None:
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"


def test_an_unexpected_error_answers_500_json_with_the_safety_headers(broken_client: TestClient) -> None:
    r = broken_client.get(BROKEN)
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"detail": "internal server error"}
    assert SECRET_TEXT not in r.text
    assert_safety_headers(r.headers)
    assert "strict-transport-security" not in r.headers  # plain http, and not configured
    assert "no-store" not in r.headers.get("cache-control", "")  # not a signed-in request
    # each safety header once, as on every other answer
    names = [name.lower() for name, _ in r.headers.raw]
    assert all(names.count(name) == 1 for name in (b"x-content-type-options", b"content-security-policy"))
    assert names.count(b"x-request-id") == 1 and r.headers["x-request-id"]  # an id to quote to the operator

    quoted = broken_client.get(BROKEN, headers={"X-Request-ID": "support-case-42"})
    assert quoted.status_code == 500 and quoted.headers["x-request-id"] == "support-case-42"

    signed_in = broken_client.get(BROKEN, headers={"Authorization": "Bearer whatever"})
    assert signed_in.status_code == 500
    assert signed_in.headers["cache-control"] == "no-store"
    assert_safety_headers(signed_in.headers)

    https = TestClient(broken_client.app, base_url="https://testserver", raise_server_exceptions=False)
    r = https.get(BROKEN)
    assert r.status_code == 500 and r.json() == {"detail": "internal server error"}
    assert "max-age=" in r.headers["strict-transport-security"]


def test_hsts_when_configured_is_on_the_500_answer_too(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path, hsts=True)
    with TestClient(with_broken_route(settings), raise_server_exceptions=False) as client:
        r = client.get(BROKEN)
        assert r.status_code == 500 and r.json() == {"detail": "internal server error"}
        assert_safety_headers(r.headers)
        assert "max-age=" in r.headers["strict-transport-security"]
        # the same header as on an answer the middleware dressed
        assert (
            r.headers["strict-transport-security"]
            == client.get("/api/health/live").headers["strict-transport-security"]
        )
