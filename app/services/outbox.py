"""The outbox relay: publishes committed task messages to the broker, with confirms, and marks them sent.

A task and its outbox row commit together, so a crash between the commit and
the publish loses nothing: the row stays unsent and the next pass (or another
replica) publishes it. A message may therefore be published twice; workers
ignore a message whose task has already finished.

What guarantees that a task whose message is lost after the publish (a broker
that drops it, a consumer that never acks nor returns it) still finishes: the
relay also sweeps for open tasks untouched for ``stale_seconds`` and marks
their outbox rows unsent again, so they are published once more. The worker's
conditional transitions make the extra message harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from app.models.base import utcnow
from app.models.task import OPEN_STATUSES, OutboxMessage, Task
from app.queue.base import PREDICT_QUEUE, TRAIN_QUEUE, Broker, dead_queue, retry_queue

log = logging.getLogger("mlmarket.outbox")

MAX_BACKOFF_SECONDS = 10.0
_outbox: sa.Table = OutboxMessage.__table__  # type: ignore[attr-defined]
_tasks: sa.Table = Task.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Pending:
    id: int
    task_id: str
    queue: str
    payload: dict[str, Any]


class OutboxRelay:
    def __init__(
        self,
        engine: Engine,
        broker: Broker,
        *,
        poll_seconds: float = 0.5,
        batch_size: int = 200,
        stale_seconds: float | None = None,
    ) -> None:
        self.engine = engine
        self.broker = broker
        self.poll_seconds = poll_seconds
        self.batch_size = batch_size
        self.stale_seconds = stale_seconds
        self.published = 0
        self.requeued = 0
        self._next_sweep = 0.0
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def wake(self, _payload: str | None = None) -> None:
        """Asks the relay to look at the outbox now; safe to call from any thread (and as the callback of a
        NOTIFY on app.core.notify.OUTBOX_CHANNEL, which every commit of a new task sends)."""
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        delay = self.poll_seconds
        while True:
            try:
                await self._sweep_when_due()
                sent = await self.flush_once()
                delay = self.poll_seconds
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                sent = 0
                delay = min(max(delay, self.poll_seconds) * 2, MAX_BACKOFF_SECONDS)
                log.warning("outbox relay cannot publish (%s: %s); retrying in %.1fs", type(exc).__name__, exc, delay)
            if sent:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            self._wake.clear()

    async def _sweep_when_due(self) -> None:
        if self.stale_seconds is None or time.monotonic() < self._next_sweep:
            return
        self._next_sweep = time.monotonic() + max(self.stale_seconds / 4, self.poll_seconds)
        requeued = await asyncio.to_thread(self.requeue_stale, self.stale_seconds)
        if requeued:
            self.requeued += requeued
            log.warning("%d open tasks untouched for %.0fs; publishing them again", requeued, self.stale_seconds)

    def requeue_stale(self, stale_seconds: float) -> int:
        """Marks the outbox rows of open tasks untouched for ``stale_seconds`` unsent, so they go out again.

        Touching the task in the same transaction makes concurrent relays (API replicas) pick each task once.
        """
        now = utcnow()
        with self.engine.begin() as conn:
            stale = (
                sa.select(_tasks.c.id)
                .where(_tasks.c.status.in_(OPEN_STATUSES), _tasks.c.updated_at < now - timedelta(seconds=stale_seconds))
                .limit(self.batch_size)
                .scalar_subquery()
            )
            ids = list(
                conn.execute(
                    sa.update(_tasks)
                    .where(_tasks.c.id.in_(stale), _tasks.c.status.in_(OPEN_STATUSES))
                    .values(updated_at=now)
                    .returning(_tasks.c.id)
                ).scalars()
            )
            if ids:
                conn.execute(
                    sa.update(_outbox)
                    .where(_outbox.c.task_id.in_(ids), _outbox.c.sent_at.is_not(None))
                    .values(sent_at=None)
                )
        return len(ids)

    async def flush_once(self) -> int:
        """Claims one batch of unsent messages and publishes them, pipelined: every publish is in flight at once
        and each waits for its own broker confirm. Returns how many were confirmed.

        Claiming marks the rows sent in the same statement that picks them (``FOR UPDATE SKIP LOCKED`` on
        PostgreSQL), so relays of several API processes never publish one row twice; a row whose publish fails
        is marked unsent again for the next pass. Should this process die between the claim and the confirm,
        the stale-task sweep publishes the task again.
        """
        pending = await asyncio.to_thread(self._claim)
        if not pending:
            return 0
        outcomes = await asyncio.gather(
            *(
                self.broker.publish(
                    message.queue,
                    message.payload,
                    message_id=message.task_id,
                    headers={"x-request-id": str(message.payload.get("request_id") or "")},
                )
                for message in pending
            ),
            return_exceptions=True,
        )
        failed = [(m, o) for m, o in zip(pending, outcomes, strict=True) if isinstance(o, BaseException)]
        sent = len(pending) - len(failed)
        self.published += sent
        if failed:
            exc = failed[0][1]
            await asyncio.to_thread(self._release, [m.id for m, _ in failed], f"{type(exc).__name__}: {exc}")
            if isinstance(exc, asyncio.CancelledError):
                raise exc
            raise exc if isinstance(exc, Exception) else RuntimeError(str(exc))
        return sent

    def _claim(self) -> list[Pending]:
        with self.engine.begin() as conn:
            unsent = sa.select(_outbox.c.id).where(_outbox.c.sent_at.is_(None)).order_by(_outbox.c.id)
            unsent = unsent.limit(self.batch_size).with_for_update(skip_locked=True)
            rows = conn.execute(
                sa.update(_outbox)
                .where(_outbox.c.id.in_(unsent.scalar_subquery()), _outbox.c.sent_at.is_(None))
                .values(sent_at=utcnow())
                .returning(_outbox.c.id, _outbox.c.task_id, _outbox.c.queue, _outbox.c.payload)
            ).all()
        return sorted(
            (Pending(id=r.id, task_id=r.task_id, queue=r.queue, payload=dict(r.payload)) for r in rows),
            key=lambda m: m.id,
        )

    def _release(self, ids: list[int], error: str) -> None:
        """The messages whose publish failed: unsent again, with the attempt and the error recorded."""
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(_outbox)
                .where(_outbox.c.id.in_(ids))
                .values(sent_at=None, publish_attempts=_outbox.c.publish_attempts + 1, last_error=error[:500])
            )

    def unsent_count(self) -> int:
        with Session(self.engine) as session:
            return int(
                session.exec(
                    select(sa.func.count()).select_from(OutboxMessage).where(col(OutboxMessage.sent_at).is_(None))
                ).one()
            )


def task_queues() -> list[tuple[str, str, str]]:
    """Each task queue with its retry and dead-letter queues: (work, retry, dead)."""
    return [(queue, retry_queue(queue), dead_queue(queue)) for queue in (PREDICT_QUEUE, TRAIN_QUEUE)]
