"""Adaptive batching: concurrent small requests to one model run as one ``predict`` call.

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
from typing import Any

from app.runtime.model import ModelRuntime


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
