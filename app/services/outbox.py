"""The outbox relay: publishes committed task messages to the broker, with confirms, and marks them sent.

A task and its outbox row commit together, so a crash between the commit and
the publish loses nothing: the row stays unsent and the next pass (or another
replica) publishes it. A message may therefore be published twice; workers
ignore a message whose task has already finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from app.models.base import utcnow
from app.models.task import OutboxMessage
from app.queue.base import Broker

log = logging.getLogger("mlmarket.outbox")

MAX_BACKOFF_SECONDS = 10.0
_outbox: sa.Table = OutboxMessage.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Pending:
    id: int
    task_id: str
    queue: str
    payload: dict[str, Any]


class OutboxRelay:
    def __init__(self, engine: Engine, broker: Broker, *, poll_seconds: float = 0.5, batch_size: int = 200) -> None:
        self.engine = engine
        self.broker = broker
        self.poll_seconds = poll_seconds
        self.batch_size = batch_size
        self.published = 0
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def wake(self) -> None:
        """Asks the relay to look at the outbox now; safe to call from any thread."""
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        delay = self.poll_seconds
        while True:
            try:
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

    async def flush_once(self) -> int:
        """Publishes one batch of unsent messages. Returns how many were confirmed by the broker."""
        pending = await asyncio.to_thread(self._pending)
        done: list[int] = []
        try:
            for message in pending:
                await self.broker.publish(
                    message.queue,
                    message.payload,
                    message_id=message.task_id,
                    headers={"x-request-id": str(message.payload.get("request_id") or "")},
                )
                done.append(message.id)
        except Exception as exc:
            if pending:
                await asyncio.to_thread(self._record_failure, pending[len(done)].id, f"{type(exc).__name__}: {exc}")
            raise
        finally:
            if done:
                await asyncio.to_thread(self._mark_sent, done)
        self.published += len(done)
        return len(done)

    def _pending(self) -> list[Pending]:
        with Session(self.engine) as session:
            rows = session.exec(
                select(OutboxMessage)
                .where(col(OutboxMessage.sent_at).is_(None))
                .order_by(col(OutboxMessage.id))
                .limit(self.batch_size)
            ).all()
            return [Pending(id=r.id or 0, task_id=r.task_id, queue=r.queue, payload=dict(r.payload)) for r in rows]

    def _mark_sent(self, ids: list[int]) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.update(_outbox).where(_outbox.c.id.in_(ids)).values(sent_at=utcnow()))

    def _record_failure(self, message_id: int, error: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(_outbox)
                .where(_outbox.c.id == message_id)
                .values(publish_attempts=_outbox.c.publish_attempts + 1, last_error=error[:500])
            )

    def unsent_count(self) -> int:
        with Session(self.engine) as session:
            return int(
                session.exec(
                    select(sa.func.count()).select_from(OutboxMessage).where(col(OutboxMessage.sent_at).is_(None))
                ).one()
            )
