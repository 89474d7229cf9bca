"""Ten failed sign-ins a minute for one account from one address, then 429 until the window has passed."""

from __future__ import annotations

from fastapi.testclient import TestClient

from app.services.throttle import LoginThrottle

TOKEN = "/api/v1/auth/token"


def test_the_eleventh_failed_sign_in_within_a_minute_is_429(client: TestClient) -> None:
    client.post("/api/v1/auth/register", json={"email": "eve@example.com", "password": "right-password"})
    for _ in range(10):
        assert client.post(TOKEN, data={"username": "eve@example.com", "password": "wrong"}).status_code == 401
    r = client.post(TOKEN, data={"username": "EVE@example.com", "password": "right-password"})
    assert r.status_code == 429
    assert "too many failed sign-ins" in r.json()["detail"]
    assert 1 <= int(r.headers["retry-after"]) <= 60
    # Another account from the same address is not affected.
    client.post("/api/v1/auth/register", json={"email": "frank@example.com", "password": "right-password"})
    assert client.post(TOKEN, data={"username": "frank@example.com", "password": "right-password"}).status_code == 200


def test_the_window_slides_and_a_success_clears_it() -> None:
    now = [0.0]
    throttle = LoginThrottle(max_failures=10, window_seconds=60, clock=lambda: now[0])
    for n in range(10):
        now[0] = n
        throttle.record_failure("a@example.com", "10.0.0.1")
    assert throttle.retry_after("a@example.com", "10.0.0.1") == 51
    assert throttle.retry_after("a@example.com", "10.0.0.2") is None
    now[0] = 60.5  # the first failure has left the window
    assert throttle.retry_after("a@example.com", "10.0.0.1") is None
    throttle.record_failure("a@example.com", "10.0.0.1")
    assert throttle.retry_after("a@example.com", "10.0.0.1") == 1
    throttle.reset("a@example.com", "10.0.0.1")
    assert throttle.retry_after("a@example.com", "10.0.0.1") is None
