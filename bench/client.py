"""A client of the mlmarket API over HTTP, as a user would drive it: register, log in, top up, predict, poll."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from bench.workload import MODEL_NAME

POLL_SECONDS = 0.01
TASK_TIMEOUT_SECONDS = 600.0
MAX_TOP_UP = 1_000_000
PASSWORD = "bench-password-not-secret"  # noqa: S105 - a throwaway user of a throwaway database


class BenchError(RuntimeError):
    """The pipeline did not do what the benchmark asked of it."""


def _expect(response: httpx.Response, status: int, what: str) -> dict[str, Any]:
    if response.status_code != status:
        raise BenchError(f"{what}: HTTP {response.status_code}: {response.text[:500]}")
    body: dict[str, Any] = response.json()
    return body


@dataclass
class User:
    client: httpx.AsyncClient
    headers: dict[str, str]

    @classmethod
    async def register(cls, client: httpx.AsyncClient, credits: int, max_top_up: int = MAX_TOP_UP) -> User:
        email = f"bench-{uuid.uuid4().hex[:12]}@example.com"
        r = await client.post("/api/v1/auth/register", json={"email": email, "password": PASSWORD})
        _expect(r, 201, "register")
        r = await client.post("/api/v1/auth/token", data={"username": email, "password": PASSWORD})
        token = _expect(r, 200, "token")["access_token"]
        user = cls(client, {"Authorization": f"Bearer {token}"})
        await user.top_up(credits, max_top_up)
        return user

    async def top_up(self, credits: int, max_top_up: int = MAX_TOP_UP) -> None:
        """Adds ``credits`` in top-ups of at most ``max_top_up`` (the server's ``max_top_up`` setting)."""
        while credits > 0:
            amount = min(credits, max_top_up)
            r = await self.client.post(
                "/api/v1/wallet/top-ups",
                json={"amount": amount},
                headers={**self.headers, "Idempotency-Key": uuid.uuid4().hex},
            )
            _expect(r, 201, "top-up")
            credits -= amount

    async def balance(self) -> int:
        r = await self.client.get("/api/v1/wallet", headers=self.headers)
        return int(_expect(r, 200, "read wallet")["balance"])

    async def submit(self, rows: list[dict[str, Any]] | bytes) -> str:
        if isinstance(rows, bytes):
            r = await self.client.post(
                "/api/v1/predictions", content=rows, headers={**self.headers, "Content-Type": "application/json"}
            )
        else:
            r = await self.client.post(
                "/api/v1/predictions", json={"model": MODEL_NAME, "rows": rows}, headers=self.headers
            )
        accepted = _expect(r, 202, "submit prediction")
        if accepted["rows_rejected"]:
            raise BenchError(f"{accepted['rows_rejected']} rows were rejected: {accepted['errors'][:3]}")
        return str(accepted["id"])

    async def wait(self, task_id: str, poll_seconds: float = POLL_SECONDS) -> dict[str, Any]:
        """Polls the task until it has succeeded; returns its last state (with the results)."""
        deadline = time.monotonic() + TASK_TIMEOUT_SECONDS
        while True:
            r = await self.client.get(f"/api/v1/predictions/{task_id}", headers=self.headers)
            task = _expect(r, 200, "read prediction")
            if task["status"] == "succeeded":
                return task
            if task["status"] == "failed":
                raise BenchError(f"task {task_id} failed: {task.get('error')}")
            if time.monotonic() > deadline:
                raise BenchError(f"task {task_id} still {task['status']} after {TASK_TIMEOUT_SECONDS:.0f}s")
            await asyncio.sleep(poll_seconds)


def http_client(base_url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(120.0), limits=httpx.Limits(max_connections=64))
