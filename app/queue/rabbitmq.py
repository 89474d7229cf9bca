"""RabbitMQ through aio-pika: durable quorum queues, persistent messages, publisher confirms.

Topology for a task queue ``Q``:

- ``Q``: the work queue (quorum, durable);
- ``Q.retry``: holds a failed message for its backoff (per-message TTL), then
  dead-letters it back to ``Q`` through the default exchange;
- ``Q.dead``: messages that failed every attempt, kept for inspection;
- ``Q.retry.<ms>ms``: instead of ``Q.retry`` for consumers with ``delay_queues``, one queue per delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection

from app.queue.base import (
    ATTEMPT_HEADER,
    Broker,
    ConsumerOptions,
    DeadLetterHandler,
    Delivery,
    MessageHandler,
    dead_queue,
    retry_queue,
)

log = logging.getLogger("mlmarket.queue")

CONNECT_TIMEOUT_SECONDS = 5.0


class RabbitBroker(Broker):
    def __init__(self, url: str, *, quorum: bool = True) -> None:
        self.url = url
        self.quorum = quorum
        self._connection: AbstractRobustConnection | None = None
        self._publish_channel: AbstractChannel | None = None
        self._declared: set[str] = set()
        self._consumers: list[_Consumer] = []
        self._lock = asyncio.Lock()

    async def connect(self) -> None:
        async with self._lock:
            if self._connection is not None and not self._connection.is_closed:
                return
            self._connection = await aio_pika.connect_robust(self.url, timeout=CONNECT_TIMEOUT_SECONDS)
            self._publish_channel = await self._connection.channel(publisher_confirms=True)
            self._declared.clear()

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
        self._connection = None
        self._publish_channel = None
        self._consumers.clear()

    async def ping(self) -> None:
        await self.connect()
        channel = await self._channel()
        if channel.is_closed:
            raise ConnectionError("RabbitMQ channel is closed")

    async def _channel(self) -> AbstractChannel:
        await self.connect()
        assert self._connection is not None  # noqa: S101 - set by connect()
        channel = self._publish_channel
        if channel is None or channel.is_closed:
            # aio-pika restores a robust channel after a reconnect, but a connection dropped again while the
            # channel is being restored can leave it closed for good (rabbitmqctl close_all_connections in the
            # fault-injection tests): once the connection is back, replace such a channel with a new one.
            await asyncio.wait_for(self._connection.ready(), timeout=CONNECT_TIMEOUT_SECONDS)
            async with self._lock:
                if self._publish_channel is channel:
                    if channel is not None:
                        with contextlib.suppress(Exception):
                            await channel.close()
                    self._publish_channel = await self._connection.channel(publisher_confirms=True)
                    self._declared.clear()
            channel = self._publish_channel
        assert channel is not None  # noqa: S101 - set above
        return channel

    def _work_arguments(self) -> dict[str, Any]:
        return {"x-queue-type": "quorum"} if self.quorum else {}

    async def _declare(self, channel: AbstractChannel, queue: str) -> aio_pika.abc.AbstractQueue:
        work = await channel.declare_queue(queue, durable=True, arguments=self._work_arguments())
        await channel.declare_queue(dead_queue(queue), durable=True, arguments=self._work_arguments())
        await channel.declare_queue(
            retry_queue(queue),
            durable=True,
            arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": queue},
        )
        return work

    async def _ensure_declared(self, queue: str) -> None:
        base = queue.removesuffix(".retry").removesuffix(".dead")
        if base not in self._declared:
            await self._declare(await self._channel(), base)
            self._declared.add(base)

    async def publish(
        self, queue: str, payload: dict[str, Any], *, message_id: str, headers: dict[str, Any] | None = None
    ) -> None:
        await self._publish(queue, payload, message_id=message_id, headers=headers or {}, expiration=None)

    async def _publish(
        self,
        queue: str,
        payload: dict[str, Any],
        *,
        message_id: str,
        headers: dict[str, Any],
        expiration: float | None,
    ) -> None:
        await self._ensure_declared(queue)
        channel = await self._channel()
        message = aio_pika.Message(
            body=json.dumps(payload).encode(),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message_id,
            headers=headers,
            expiration=expiration,
        )
        # With publisher confirms this returns only after the broker has taken the message.
        await channel.default_exchange.publish(message, routing_key=queue, mandatory=True)

    async def _publish_delayed(
        self, queue: str, payload: dict[str, Any], message_id: str, headers: dict[str, Any], delay: float
    ) -> None:
        """Into ``Q.retry.<ms>ms``, a queue for this delay alone (queue-wide TTL), dead-lettered back to ``Q``."""
        ms = max(int(delay * 1000), 1)
        name = f"{retry_queue(queue)}.{ms}ms"
        channel = await self._channel()
        if name not in self._declared:
            arguments: dict[str, Any] = {
                "x-message-ttl": ms,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": queue,
            }
            await channel.declare_queue(name, durable=True, arguments=arguments)
            self._declared.add(name)
        message = aio_pika.Message(
            body=json.dumps(payload).encode(),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message_id,
            headers=headers,
        )
        await channel.default_exchange.publish(message, routing_key=name, mandatory=True)

    async def consume(
        self, queue: str, handler: MessageHandler, on_dead: DeadLetterHandler, options: ConsumerOptions
    ) -> None:
        await self.connect()
        assert self._connection is not None  # noqa: S101 - set by connect()
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=options.prefetch)
        self._consumers.append(_Consumer(channel, (queue, handler, on_dead, options)))
        work = await self._declare(channel, queue)
        self._declared.add(queue)

        async def republish(target: str, payload: dict[str, Any], headers: dict[str, Any], delay: float | None) -> None:
            if options.delay_queues and delay and target == retry_queue(queue):
                await self._publish_delayed(queue, payload, str(payload.get("task_id", "")), headers, delay)
                return
            await self._publish(
                target,
                payload,
                message_id=str(payload.get("task_id", "")),
                headers=headers,
                expiration=delay if delay and delay > 0 else None,
            )

        async def on_message(message: AbstractIncomingMessage) -> None:
            headers = dict(message.headers or {})
            try:
                payload = json.loads(message.body)
                if not isinstance(payload, dict):
                    raise ValueError("message body is not a JSON object")
            except ValueError as exc:
                log.error("dropping malformed message %s to %s: %s", message.message_id, dead_queue(queue), exc)
                await channel.default_exchange.publish(
                    aio_pika.Message(message.body, headers=headers, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key=dead_queue(queue),
                )
                await message.ack()
                return
            delivery = Delivery(
                queue=queue,
                payload=payload,
                message_id=message.message_id or "",
                attempt=_attempt(headers),
                headers=headers,
                redelivered=bool(message.redelivered),
            )
            try:
                await handler(delivery)
            except Exception as exc:
                try:
                    await self._settle_failure(delivery, exc, on_dead, options, republish)
                except Exception:
                    log.exception("could not retry or dead-letter %s; returning it to the queue", delivery.message_id)
                    await asyncio.sleep(1)
                    await message.nack(requeue=True)
                    return
            await message.ack()

        await work.consume(on_message)

    async def check_consumers(self) -> int:
        """Restarts consumers whose channel stayed closed after the connection came back. Returns how many."""
        if self._connection is None or self._connection.is_closed or not self._connection.connected.is_set():
            return 0
        restarted = 0
        for consumer in list(self._consumers):
            if not consumer.channel.is_closed:
                consumer.closed_checks = 0
                continue
            # The first sighting may be aio-pika still restoring the channel; replace it on the second.
            consumer.closed_checks += 1
            if consumer.closed_checks < 2:
                continue
            log.warning("consumer channel of %s stayed closed after a reconnect; consuming again", consumer.args[0])
            self._consumers.remove(consumer)
            with contextlib.suppress(Exception):
                await consumer.channel.close()
            await self.consume(*consumer.args)
            restarted += 1
        return restarted

    async def queue_depth(self, queue: str) -> int:
        await self._ensure_declared(queue)
        channel = await self._channel()
        # The robust channel caches declarations, so ask the broker through the underlying channel.
        raw = await channel.get_underlay_channel()
        declared = await raw.queue_declare(queue, passive=True)
        return int(declared.message_count or 0)


@dataclass
class _Consumer:
    channel: AbstractChannel
    args: tuple[str, MessageHandler, DeadLetterHandler, ConsumerOptions]
    closed_checks: int = 0


def _attempt(headers: dict[str, Any]) -> int:
    try:
        return max(int(headers.get(ATTEMPT_HEADER, 1)), 1)
    except (TypeError, ValueError):
        return 1
