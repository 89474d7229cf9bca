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

Training jobs get the same sweep, every ``training_sweep_seconds``: a worker
holds a running job, shard or merge under a lease it renews while it works, so
a job whose lease has run out lost its worker and is published again at once;
a queued job or shard untouched for ``training_stale_seconds`` lost its
message and is published again too.
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
from app.models.task import OPEN_STATUSES, OutboxMessage, Task, TaskStatus
from app.models.training import TrainingJob, TrainingShard
from app.models.webhook import WebhookDelivery, WebhookEvent, WebhookEventStatus
from app.queue.base import PREDICT_QUEUE, TRAIN_QUEUE, WEBHOOK_QUEUE, dead_queue, retry_queue
from app.queue.base import Broker as Broker  # for the routes, which do not import the queue

log = logging.getLogger("mlmarket.outbox")

MAX_BACKOFF_SECONDS = 10.0
_outbox: sa.Table = OutboxMessage.__table__  # type: ignore[attr-defined]
_tasks: sa.Table = Task.__table__  # type: ignore[attr-defined]
_jobs: sa.Table = TrainingJob.__table__  # type: ignore[attr-defined]
_shards: sa.Table = TrainingShard.__table__  # type: ignore[attr-defined]
_events: sa.Table = WebhookEvent.__table__  # type: ignore[attr-defined]
_deliveries: sa.Table = WebhookDelivery.__table__  # type: ignore[attr-defined]
MERGING = "merging shards"  # app.services.training_shards.MERGING (that module imports the worker's services)


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
        training_stale_seconds: float | None = None,
        training_sweep_seconds: float = 10.0,
        webhook_stale_seconds: float | None = None,
    ) -> None:
        self.engine = engine
        self.broker = broker
        self.poll_seconds = poll_seconds
        self.batch_size = batch_size
        self.stale_seconds = stale_seconds
        self.training_stale_seconds = training_stale_seconds
        self.training_sweep_seconds = training_sweep_seconds
        self.webhook_stale_seconds = webhook_stale_seconds
        self._next_training_sweep = 0.0
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
        await self._sweep_training_when_due()
        if self.stale_seconds is None or time.monotonic() < self._next_sweep:
            return
        self._next_sweep = time.monotonic() + max(self.stale_seconds / 4, self.poll_seconds)
        requeued = await asyncio.to_thread(self.requeue_stale, self.stale_seconds)
        if requeued:
            self.requeued += requeued
            log.warning("%d open tasks untouched for %.0fs; publishing them again", requeued, self.stale_seconds)
        if self.webhook_stale_seconds is not None:
            resent = await asyncio.to_thread(self.requeue_stale_webhooks, self.webhook_stale_seconds)
            if resent:
                self.requeued += resent
                log.warning("%d webhook events lost their message; publishing them again", resent)

    async def _sweep_training_when_due(self) -> None:
        if self.training_stale_seconds is None or time.monotonic() < self._next_training_sweep:
            return
        self._next_training_sweep = time.monotonic() + self.training_sweep_seconds
        requeued = await asyncio.to_thread(self.requeue_stale_training, self.training_stale_seconds)
        if requeued:
            self.requeued += requeued
            log.warning(
                "%d training jobs or shards lost their worker or their message; publishing them again", requeued
            )

    def requeue_stale_training(self, stale_seconds: float) -> int:
        """Marks unsent the outbox rows of training work that lost its worker or its message; returns how many.

        Lost its worker: running under a lease that ran out and no sweep has published it since (then again every
        ``stale_seconds``). Lost its message: queued and untouched for ``stale_seconds``. That is, per job of one
        shard, per shard of a sharded job, and per sharded job whose shards all succeeded but whose merge is not
        running (one of its shards' messages goes out again: whoever takes it claims the merge). Each item is
        touched in the statement that picks it, so concurrent relays pick it once.
        """
        now = utcnow()
        stale = now - timedelta(seconds=stale_seconds)

        def lost(table: sa.Table, *, queued: bool = True) -> sa.ColumnElement[bool]:
            expired = sa.and_(
                table.c.status == TaskStatus.running.value,
                sa.or_(table.c.lease_until.is_(None), table.c.lease_until < now),
                sa.or_(
                    table.c.updated_at < stale, table.c.lease_until.is_(None), table.c.updated_at <= table.c.lease_until
                ),
            )
            if not queued:
                return expired
            return sa.or_(sa.and_(table.c.status == TaskStatus.queued.value, table.c.updated_at < stale), expired)

        def touch(conn: sa.Connection, table: sa.Table, which: sa.ColumnElement[bool]) -> list[str]:
            picked = sa.select(table.c.id).where(which).limit(self.batch_size).scalar_subquery()
            return list(
                conn.execute(
                    sa.update(table).where(table.c.id.in_(picked), which).values(updated_at=now).returning(table.c.id)
                ).scalars()
            )

        open_job = sa.select(_jobs.c.id).where(_jobs.c.status.in_(OPEN_STATUSES))
        unfinished_shard = sa.exists().where(
            _shards.c.job_id == _jobs.c.id, _shards.c.status != TaskStatus.succeeded.value
        )
        # A sharded job waits for its merge while running, every shard succeeded, and the merge is not held by a live
        # lease: a merge whose finalizer died, or one nobody claimed (the last shard's worker died before it could).
        merge_waiting = sa.and_(
            _jobs.c.shards > 1,
            _jobs.c.status == TaskStatus.running.value,
            ~unfinished_shard,
            sa.or_(
                sa.and_(_jobs.c.stage == MERGING, lost(_jobs, queued=False)),
                sa.and_(_jobs.c.stage != MERGING, _jobs.c.updated_at < stale),
            ),
        )
        with self.engine.begin() as conn:
            messages = touch(conn, _jobs, sa.and_(_jobs.c.shards == 1, lost(_jobs)))
            messages += touch(conn, _shards, sa.and_(_shards.c.job_id.in_(open_job), lost(_shards)))
            merges = touch(conn, _jobs, merge_waiting)
            if merges:
                first_shard = (
                    sa.select(sa.func.min(_shards.c.id)).where(_shards.c.job_id.in_(merges)).group_by(_shards.c.job_id)
                )
                messages += list(conn.execute(first_shard).scalars())
            if messages:
                conn.execute(sa.update(_outbox).where(_outbox.c.task_id.in_(messages)).values(sent_at=None))
        return len(messages)

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

    def requeue_stale_webhooks(self, stale_seconds: float) -> int:
        """Marks unsent the outbox rows of pending webhook events with no delivery attempt since they were published
        ``stale_seconds`` ago (longer than any retry wait): their message was lost. A duplicate is harmless, the
        deliverer skips an event that is no longer pending."""
        cutoff = utcnow() - timedelta(seconds=stale_seconds)
        event_id = _outbox.c.payload["event_id"].as_string()
        attempted = sa.exists().where(_deliveries.c.event_id == _events.c.id, _deliveries.c.created_at >= cutoff)
        lost = (
            sa.select(_outbox.c.id)
            .join(_events, _events.c.id == event_id)
            .where(
                _outbox.c.queue == WEBHOOK_QUEUE,
                _outbox.c.sent_at < cutoff,
                _events.c.status == WebhookEventStatus.pending.value,
                ~attempted,
            )
            .limit(self.batch_size)
        )
        with self.engine.begin() as conn:
            ids = list(conn.execute(lost).scalars())
            if ids:
                conn.execute(sa.update(_outbox).where(_outbox.c.id.in_(ids)).values(sent_at=None))
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
