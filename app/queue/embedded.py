"""The embedded queue: asyncio queues inside the API process, for the local demo.

Nothing here survives a restart, so on start-up the API re-publishes every task
that is still queued or running (see app.services.predictions.open_task_ids).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from app.queue.base import (
    ATTEMPT_HEADER,
    Broker,
    ConsumerOptions,
    DeadLetterHandler,
    Delivery,
    MessageHandler,
)

log = logging.getLogger("mlmarket.queue")


class EmbeddedBroker(Broker):
    def __init__(self) -> None:
        self._queues: dict[str, asyncio.Queue[Delivery]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.dead_letters: list[Delivery] = []

    def _queue(self, name: str) -> asyncio.Queue[Delivery]:
        return self._queues.setdefault(name, asyncio.Queue())

    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    async def ping(self) -> None:
        return None

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def publish(
        self, queue: str, payload: dict[str, Any], *, message_id: str, headers: dict[str, Any] | None = None
    ) -> None:
        headers = dict(headers or {})
        delivery = Delivery(
            queue=queue,
            # A JSON round trip, as on the wire: the consumer never shares the publisher's objects.
            payload=json.loads(json.dumps(payload)),
            message_id=message_id,
            attempt=int(headers.get(ATTEMPT_HEADER, 1)),
            headers=headers,
        )
        self._queue(queue).put_nowait(delivery)

    async def _republish(
        self, queue: str, payload: dict[str, Any], headers: dict[str, Any], delay: float | None
    ) -> None:
        if queue.endswith(".dead"):
            self.dead_letters.append(Delivery(queue=queue, payload=payload, message_id="", headers=headers))
            return
        target = queue.removesuffix(".retry")

        async def later() -> None:
            await asyncio.sleep(delay or 0)
            await self.publish(target, payload, message_id=str(payload.get("task_id", "")), headers=headers)

        self._spawn(later())

    async def consume(
        self, queue: str, handler: MessageHandler, on_dead: DeadLetterHandler, options: ConsumerOptions
    ) -> None:
        source = self._queue(queue)

        async def consumer() -> None:
            while True:
                delivery = await source.get()
                try:
                    await handler(delivery)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    try:
                        await self._settle_failure(delivery, exc, on_dead, options, self._republish)
                    except Exception:
                        log.exception("could not settle failed message %s; retrying it", delivery.message_id)
                        await asyncio.sleep(1)
                        source.put_nowait(delivery)

        for _ in range(options.prefetch):
            self._spawn(consumer())

    async def queue_depth(self, queue: str) -> int:
        if queue.endswith(".dead"):
            return sum(1 for d in self.dead_letters if d.queue == queue)
        return self._queue(queue).qsize()
