"""Adaptive batching: concurrent small requests to one model run as one ``predict`` call.

``Coalescer`` does the same for other blocking work, such as billing: whatever
arrives while one run is busy goes into the next run together.

A request waits at most ``max_wait`` seconds (2 ms by default) for company; a
batch closes as soon as it holds ``max_rows`` rows, and requests that arrive
while a batch runs form the next one. Requests of ``max_rows`` rows or more
skip the batcher.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from app.runtime.model import ModelRuntime

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Pending:
    rows: list[dict[str, Any]]
    future: asyncio.Future[list[Any]]


@dataclass
class _Lane:
    queue: list[_Pending] = field(default_factory=list)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    busy: bool = False


class AdaptiveBatcher:
    def __init__(self, *, max_rows: int = 64, max_wait: float = 0.002, enabled: bool = True) -> None:
        self.max_rows = max_rows
        self.max_wait = max_wait
        self.enabled = enabled
        self.batches = 0
        self.batched_requests = 0
        self._lanes: dict[str, _Lane] = {}

    async def predict(self, key: str, runtime: ModelRuntime, rows: list[dict[str, Any]]) -> list[Any]:
        if not self.enabled or len(rows) >= self.max_rows:
            return await asyncio.to_thread(runtime.predict, rows)
        lane = self._lanes.setdefault(key, _Lane())
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        lane.queue.append(_Pending(rows, future))
        lane.wakeup.set()
        if lane.task is None or lane.task.done():
            lane.task = asyncio.create_task(self._drain(lane, runtime.predict))
        return await future

    async def _drain(self, lane: _Lane, predict: Callable[[list[dict[str, Any]]], list[Any]]) -> None:
        while lane.queue:
            # While a batch runs, newcomers gather; a lone request on a quiet lane waits at most max_wait.
            if sum(len(p.rows) for p in lane.queue) < self.max_rows and self.max_wait > 0:
                lane.wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full(lane), timeout=self.max_wait)
            batch: list[_Pending] = []
            size = 0
            while lane.queue and (not batch or size + len(lane.queue[0].rows) <= self.max_rows):
                pending = lane.queue.pop(0)
                batch.append(pending)
                size += len(pending.rows)
            rows = [row for p in batch for row in p.rows]
            try:
                results = await asyncio.to_thread(predict, rows)
            except Exception as exc:
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            self.batches += 1
            self.batched_requests += len(batch)
            offset = 0
            for p in batch:
                if not p.future.done():
                    p.future.set_result(results[offset : offset + len(p.rows)])
                offset += len(p.rows)

    async def _full(self, lane: _Lane) -> None:
        while sum(len(p.rows) for p in lane.queue) < self.max_rows:
            await lane.wakeup.wait()
            lane.wakeup.clear()


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
