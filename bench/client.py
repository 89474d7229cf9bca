"""A client of the mlmarket API over HTTP, as a user would drive it: register, log in, top up, predict.

A user waits for a prediction the way the API asks to be waited on: ``POST /api/v1/predictions`` with
``Prefer: wait=N`` answers 200 with the finished task when it finishes within N seconds, else 202 with its id,
and only then does the user poll ``GET /api/v1/predictions/{id}`` (:meth:`User.predict`). :meth:`User.submit`
and :meth:`User.wait` are the other way, submit then poll, as an outside tester may do.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from bench.workload import MODEL_NAME

POLL_SECONDS = 0.01
PREFER_WAIT_SECONDS = 30.0
FINISHED = ("succeeded", "failed")
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


def _check_accepted(task: dict[str, Any]) -> dict[str, Any]:
    if task.get("rows_rejected"):
        raise BenchError(f"{task['rows_rejected']} rows were rejected: {task.get('errors', [])[:3]}")
    return task


def _finished(task: dict[str, Any]) -> dict[str, Any]:
    """The task if it succeeded; BenchError if it failed or is not finished."""
    if task.get("status") == "succeeded":
        return task
    if task.get("status") == "failed":
        raise BenchError(f"task {task.get('id')} failed: {task.get('error')}")
    raise BenchError(f"task {task.get('id')} was answered as finished while {task.get('status')}")


@dataclass
class User:
    client: httpx.AsyncClient
    headers: dict[str, str]
    polled_after_wait: int = 0  # predictions that did not finish within ``Prefer: wait`` and were polled

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

    async def _post_prediction(
        self, rows: list[dict[str, Any]] | bytes, model: str, extra_headers: dict[str, str] | None = None
    ) -> httpx.Response:
        headers = {**self.headers, **(extra_headers or {})}
        if isinstance(rows, bytes):
            return await self.client.post(
                "/api/v1/predictions", content=rows, headers={**headers, "Content-Type": "application/json"}
            )
        return await self.client.post("/api/v1/predictions", json={"model": model, "rows": rows}, headers=headers)

    async def submit(self, rows: list[dict[str, Any]] | bytes, model: str = MODEL_NAME) -> str:
        """Submits without waiting (202); the task's id.

        ``rows`` are rows of ``model``, or a whole JSON body encoded beforehand (which names its model).
        """
        accepted = _check_accepted(_expect(await self._post_prediction(rows, model), 202, "submit prediction"))
        return str(accepted["id"])

    async def predict(
        self,
        rows: list[dict[str, Any]] | bytes,
        wait: float | None = PREFER_WAIT_SECONDS,
        poll_seconds: float = POLL_SECONDS,
        model: str = MODEL_NAME,
    ) -> dict[str, Any]:
        """Submits and returns the finished task (as ``GET /api/v1/predictions/{id}`` shows it, with the results).

        With ``wait``, asks the API to answer once the task has finished (``Prefer: wait=N``): 200 with the task;
        a 202 means it did not finish within the wait, and the task is then polled every ``poll_seconds``
        (counted in :attr:`polled_after_wait`). Without, submits and polls.
        """
        if wait is None:
            return await self.wait(await self.submit(rows, model), poll_seconds)
        r = await self._post_prediction(rows, model, {"Prefer": f"wait={wait:g}"})
        if r.status_code == 202:
            accepted = _check_accepted(_expect(r, 202, "submit prediction"))
            self.polled_after_wait += 1
            return await self.wait(str(accepted["id"]), poll_seconds)
        task = _check_accepted(_expect(r, 200, "predict with Prefer: wait"))
        return _finished(task)

    async def wait(self, task_id: str, poll_seconds: float = POLL_SECONDS) -> dict[str, Any]:
        """Polls the task every ``poll_seconds`` until it has succeeded; returns its last state (with the results)."""
        deadline = time.monotonic() + TASK_TIMEOUT_SECONDS
        while True:
            r = await self.client.get(f"/api/v1/predictions/{task_id}", headers=self.headers)
            task = _expect(r, 200, "read prediction")
            if task["status"] in FINISHED:
                return _finished(task)
            if time.monotonic() > deadline:
                raise BenchError(f"task {task_id} still {task['status']} after {TASK_TIMEOUT_SECONDS:.0f}s")
            await asyncio.sleep(poll_seconds)


def http_client(base_url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(120.0), limits=httpx.Limits(max_connections=64))
