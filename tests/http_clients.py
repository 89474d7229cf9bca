"""A paying user of a running API, over real HTTP: shared by the tests of the serving path."""

from __future__ import annotations

import uuid

import httpx


def paying_user(base: str, credits: int) -> dict[str, str]:
    """Registers a new user, tops them up with ``credits`` and returns headers carrying their bearer token."""
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    httpx.post(f"{base}/api/v1/auth/register", json={"email": email, "password": "password-1"}, timeout=30)
    token = httpx.post(f"{base}/api/v1/auth/token", data={"username": email, "password": "password-1"}, timeout=30)
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    if credits:
        r = httpx.post(
            f"{base}/api/v1/wallet/top-ups",
            json={"amount": credits},
            headers={**headers, "Idempotency-Key": email},
            timeout=30,
        )
        assert r.status_code == 201, r.text
    return headers


def balance(base: str, headers: dict[str, str]) -> int:
    return int(httpx.get(f"{base}/api/v1/wallet", headers=headers, timeout=30).json()["balance"])
