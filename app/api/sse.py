"""Server-Sent Events of a task's or a job's state, shared by the prediction and training routes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Hashable
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from app.core.notify import Watch
from app.models.task import FINISHED_STATUSES

POLL_SECONDS = 0.25
KEEPALIVE_SECONDS = 15.0


async def state_events(
    request: Request,
    snapshot: Callable[[], dict[str, Any]],
    *,
    event: str,
    changed_by: Callable[[dict[str, Any]], Hashable],
    max_seconds: float,
    watch: Watch | None = None,
) -> StreamingResponse:
    """One ``event`` with the state now, then one each time ``changed_by(state)`` changes, until it finishes.

    The first snapshot is taken before the stream starts, so an unknown id (or
    another user's) is an ordinary 404 rather than a broken stream. With
    ``watch`` (change notices of the thing watched, registered before this is
    called, so before that first snapshot; closed when the stream ends) a new
    snapshot is taken when a notice comes, and at the latest every keep-alive;
    without it, every ``POLL_SECONDS``.
    """
    try:
        first = await run_in_threadpool(snapshot)
    except BaseException:
        if watch is not None:
            watch.close()
        raise

    def frame(state: dict[str, Any]) -> str:
        return f"event: {event}\ndata: {json.dumps(state)}\n\n"

    async def stream() -> AsyncIterator[str]:
        try:
            async for chunk in _frames():
                yield chunk
        finally:
            if watch is not None:
                watch.close()

    async def _frames() -> AsyncIterator[str]:
        current = first
        yield frame(current)
        loop = asyncio.get_running_loop()
        started = last_sent = loop.time()
        while current["status"] not in FINISHED_STATUSES and loop.time() - started < max_seconds:
            if await request.is_disconnected():
                return
            if watch is not None:
                await watch.next(KEEPALIVE_SECONDS)
            else:
                await asyncio.sleep(POLL_SECONDS)
            latest = await run_in_threadpool(snapshot)
            if changed_by(latest) != changed_by(current):
                current = latest
                last_sent = loop.time()
                yield frame(current)
            elif loop.time() - last_sent > KEEPALIVE_SECONDS:
                last_sent = loop.time()
                yield ": keep-alive\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
