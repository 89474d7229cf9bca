"""Batching under load only: whatever arrives while one run is busy goes into the next run together.

A lone item on an idle ``Coalescer`` runs at once (no wait for company, unlike a
fixed batching window); under load, items gather while the previous run works
and share the next one. The data plane serves and bills synchronous inference
this way: one predict per model and one transaction for a whole batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    """Runs ``work(items)`` in a thread, one run at a time, on every item that arrived while the last run was busy.

    A lone item runs at once; under load many items share one run (for billing: one database transaction
    instead of one per request, and no two of them waiting for each other's lock). ``work`` returns one result
    per item, or an exception in an item's place to raise for that item alone; an exception raised by ``work``
    itself is raised for every item of the run.
    """

    def __init__(self, work: Callable[[list[T]], list[R | BaseException]], *, max_items: int = 256) -> None:
        self.work = work
        self.max_items = max_items
        self.runs = 0
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (tests start one per client): forget the old one's state
            self._loop, self._queue, self._task = loop, [], None
        future: asyncio.Future[R] = loop.create_future()
        self._queue.append((item, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._queue:
            batch = self._queue[: self.max_items]
            del self._queue[: self.max_items]
            try:
                results = await asyncio.to_thread(self.work, [item for item, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.runs += 1
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
