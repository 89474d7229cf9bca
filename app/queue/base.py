"""What every broker does: publish with confirmation, consume with bounded prefetch, retry, dead-letter.

A handler that returns normally has its message acked. A handler that raises
has the message retried after an exponential backoff, up to ``max_attempts``
deliveries; then the message goes to the dead-letter queue and ``on_dead`` runs
(the task is marked failed and refunded) before the ack. Nothing is acked
before the work it stands for is committed.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from app.core.config import Settings

log = logging.getLogger("mlmarket.queue")

PREDICT_QUEUE = "tasks.predict"
TRAIN_QUEUE = "tasks.train"
WEBHOOK_QUEUE = "webhooks.deliver"
ATTEMPT_HEADER = "x-mlmarket-attempt"
ERROR_HEADER = "x-mlmarket-error"
MAX_RETRY_DELAY_SECONDS = 60.0


def retry_queue(queue: str) -> str:
    return f"{queue}.retry"


def dead_queue(queue: str) -> str:
    return f"{queue}.dead"


def backoff_seconds(attempt: int, base: float, cap: float = MAX_RETRY_DELAY_SECONDS) -> float:
    """Delay before delivery number ``attempt + 1``: base, 2 * base, 4 * base ..., capped (at a minute)."""
    return float(min(base * (2 ** max(attempt - 1, 0)), cap))


@dataclass
class Delivery:
    queue: str
    payload: dict[str, Any]
    message_id: str
    attempt: int = 1
    headers: dict[str, Any] = field(default_factory=dict)
    redelivered: bool = False


MessageHandler = Callable[[Delivery], Awaitable[None]]
DeadLetterHandler = Callable[[Delivery, str], Awaitable[None]]


@dataclass(frozen=True)
class ConsumerOptions:
    prefetch: int = 64
    max_attempts: int = 3
    retry_base_delay: float = 1.0
    max_retry_delay: float = MAX_RETRY_DELAY_SECONDS
    # RabbitMQ: one retry queue per delay (a queue-wide TTL) instead of per-message TTLs in one retry queue, where a
    # long delay at the head holds up the shorter ones behind it. For queues whose delays vary widely (webhooks).
    delay_queues: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> ConsumerOptions:
        return cls(
            prefetch=settings.worker_prefetch,
            max_attempts=settings.task_max_attempts,
            retry_base_delay=settings.retry_base_delay_seconds,
        )


class Broker(abc.ABC):
    """A durable task queue. Business logic sees only this interface."""

    @abc.abstractmethod
    async def connect(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def publish(
        self, queue: str, payload: dict[str, Any], *, message_id: str, headers: dict[str, Any] | None = None
    ) -> None:
        """Returns once the broker has confirmed the message (persisted); raises otherwise."""

    @abc.abstractmethod
    async def consume(
        self, queue: str, handler: MessageHandler, on_dead: DeadLetterHandler, options: ConsumerOptions
    ) -> None:
        """Starts consuming in the background and returns."""

    @abc.abstractmethod
    async def queue_depth(self, queue: str) -> int: ...

    async def check_consumers(self) -> int:
        """Restarts consumers that stopped receiving after a lost connection. Returns how many were restarted."""
        return 0

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raises when the broker cannot be reached."""

    async def _settle_failure(
        self,
        delivery: Delivery,
        error: BaseException,
        on_dead: DeadLetterHandler,
        options: ConsumerOptions,
        republish: Callable[[str, dict[str, Any], dict[str, Any], float | None], Awaitable[None]],
    ) -> None:
        """After a failed attempt: schedule a retry, or dead-letter the message and run ``on_dead``."""
        reason = f"{type(error).__name__}: {error}"[:1000]
        if delivery.attempt < options.max_attempts:
            delay = backoff_seconds(delivery.attempt, options.retry_base_delay, options.max_retry_delay)
            log.warning(
                "task message %s failed (attempt %d of %d), retrying in %.1fs: %s",
                delivery.message_id,
                delivery.attempt,
                options.max_attempts,
                delay,
                reason,
            )
            headers = {**delivery.headers, ATTEMPT_HEADER: delivery.attempt + 1}
            await republish(retry_queue(delivery.queue), delivery.payload, headers, delay)
            return
        log.error("task message %s failed %d times, dead-lettering: %s", delivery.message_id, delivery.attempt, reason)
        headers = {**delivery.headers, ERROR_HEADER: reason}
        await republish(dead_queue(delivery.queue), delivery.payload, headers, None)
        await on_dead(delivery, reason)
