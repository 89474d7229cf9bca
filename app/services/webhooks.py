"""Signed webhooks: the subscriptions, the signing secrets, the events of tasks and their deliveries.

Which receivers are allowed is in app.services.webhook_addresses; how messages are signed in
app.services.webhook_signing.

A prediction or a training job may name a webhook; its subscription row commits with the task. When a worker's
transaction starts or finishes the task, :func:`record_events` writes the event and an outbox row for the
``webhooks.deliver`` queue in that same transaction, so an event is never lost nor sent for work that did not
commit, and the task never waits for a receiver. The outbox relay publishes it; ml_worker.webhooks delivers it,
signed as the Standard Webhooks specification says (``webhook-id``, ``webhook-timestamp``,
``webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``), and records every attempt.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from app.core.errors import Unprocessable
from app.core.notify import OUTBOX_CHANNEL
from app.models.base import utcnow
from app.models.task import OutboxMessage
from app.models.webhook import (
    WebhookDelivery,
    WebhookDeliveryPublic,
    WebhookEvent,
    WebhookEventStatus,
    WebhookEventType,
    WebhookRequest,
    WebhookSecret,
    WebhookSubscription,
)
from app.queue.base import WEBHOOK_QUEUE
from app.services.webhook_addresses import checked_url
from app.services.webhook_signing import new_secret, signing_secrets

PREDICTION = "prediction"
TRAINING_JOB = "training_job"

STARTED = WebhookEventType.started
COMPLETED = WebhookEventType.completed

_subscriptions: sa.Table = WebhookSubscription.__table__  # type: ignore[attr-defined]
SUBSCRIPTIONS_TABLE = _subscriptions
_events: sa.Table = WebhookEvent.__table__  # type: ignore[attr-defined]
_deliveries: sa.Table = WebhookDelivery.__table__  # type: ignore[attr-defined]
_secrets: sa.Table = WebhookSecret.__table__  # type: ignore[attr-defined]
_outbox: sa.Table = OutboxMessage.__table__  # type: ignore[attr-defined]


# -- subscriptions ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where and when to deliver the events of one task."""

    url: str
    on_started: bool
    on_completed: bool


def target_of(request: WebhookRequest | None, *, allow_private: bool) -> Target | None:
    """The checked webhook of a request (422 if it cannot be used); None when it names none."""
    if request is None or request.webhook is None:
        if request is not None and request.webhook_events:
            raise Unprocessable("webhook_events needs a webhook URL")
        return None
    events = set(request.webhook_events or [WebhookEventType.completed])
    return Target(
        url=checked_url(request.webhook, allow_private=allow_private),
        on_started=WebhookEventType.started in events,
        on_completed=WebhookEventType.completed in events,
    )


def subscription_row(task_id: str, kind: str, user_id: int, target: Target, now: datetime) -> dict[str, Any]:
    """The subscription of a new task, to insert in the transaction that creates it."""
    return {
        "task_id": task_id,
        "kind": kind,
        "user_id": user_id,
        "url": target.url,
        "on_started": target.on_started,
        "on_completed": target.on_completed,
        "created_at": now,
    }


def subscribe(session: Session, *, task_id: str, kind: str, user_id: int, target: Target | None) -> None:
    """Adds the subscription of a new task to the session (the caller commits it with the task)."""
    if target is not None:
        session.add(WebhookSubscription(**subscription_row(task_id, kind, user_id, target, utcnow())))


# -- events ----------------------------------------------------------------------------------------------------


def event_id(event: str, task_id: str) -> str:
    """The ``webhook-id`` of a task's event: one message per task and event, whatever the redeliveries."""
    return f"msg_{event}_{task_id}"


# PostgreSQL: the events of the subscribed tasks and their outbox rows in one statement (a NOTIFY wakes the
# relays when there are any).
_RECORD_SQL = (
    "WITH e AS (INSERT INTO webhook_events (id, task_id, kind, user_id, event, url, status, attempts, created_at) "
    "SELECT 'msg_' || %(event)s || '_' || s.task_id, s.task_id, s.kind, s.user_id, %(event)s, s.url, 'pending', 0, "
    "%(now)s FROM webhook_subscriptions AS s WHERE s.task_id = ANY(%(ids)s::VARCHAR[]) AND {flag} "
    "ON CONFLICT (id) DO NOTHING RETURNING id, task_id), "
    "o AS (INSERT INTO outbox (task_id, queue, payload, created_at, publish_attempts) "
    "SELECT task_id, %(queue)s, json_build_object('event_id', id, 'task_id', task_id), %(now)s, 0 FROM e "
    "RETURNING 1), "
    "n AS (SELECT pg_notify(%(channel)s, '') FROM (SELECT 1 FROM o LIMIT 1) AS x) "
    "SELECT (SELECT count(*) FROM o), (SELECT count(*) FROM n)"
)


def record_events(connection: sa.Connection, task_ids: Sequence[str], event: WebhookEventType) -> int:
    """Writes the ``event`` of each of ``task_ids`` that subscribed to it, with its outbox row, in the caller's
    transaction (once per task and event: a repeated start records nothing). Returns how many were written."""
    if not task_ids:
        return 0
    flag = "s.on_started" if event is WebhookEventType.started else "s.on_completed"
    now = utcnow()
    if connection.dialect.name == "postgresql":
        params = {
            "event": event.value,
            "now": now,
            "ids": list(task_ids),
            "queue": WEBHOOK_QUEUE,
            "channel": OUTBOX_CHANNEL,
        }
        return int(connection.exec_driver_sql(_RECORD_SQL.format(flag=flag), params).one()[0])
    column = _subscriptions.c.on_started if event is WebhookEventType.started else _subscriptions.c.on_completed
    subscribed = connection.execute(
        sa.select(
            _subscriptions.c.task_id, _subscriptions.c.kind, _subscriptions.c.user_id, _subscriptions.c.url
        ).where(_subscriptions.c.task_id.in_(list(task_ids)), column.is_(True))
    ).all()
    if not subscribed:
        return 0
    ids = {event_id(event.value, row.task_id): row for row in subscribed}
    known = set(connection.execute(sa.select(_events.c.id).where(_events.c.id.in_(list(ids)))).scalars())
    new = {i: row for i, row in ids.items() if i not in known}
    if not new:
        return 0
    connection.execute(
        sa.insert(_events),
        [
            {
                "id": i,
                "task_id": row.task_id,
                "kind": row.kind,
                "user_id": row.user_id,
                "event": event.value,
                "url": row.url,
                "status": WebhookEventStatus.pending.value,
                "attempts": 0,
                "created_at": now,
            }
            for i, row in new.items()
        ],
    )
    connection.execute(
        sa.insert(_outbox),
        [
            {
                "task_id": row.task_id,
                "queue": WEBHOOK_QUEUE,
                "payload": {"event_id": i, "task_id": row.task_id},
                "created_at": now,
                "publish_attempts": 0,
            }
            for i, row in new.items()
        ],
    )
    return len(new)


def pending_messages(session: Session) -> list[dict[str, Any]]:
    """The messages of events not yet delivered nor given up (the embedded queue hands them out again after a
    restart)."""
    rows = session.exec(
        select(WebhookEvent.id, WebhookEvent.task_id).where(WebhookEvent.status == WebhookEventStatus.pending.value)
    ).all()
    return [{"event_id": i, "task_id": t} for i, t in rows]


# -- secrets ---------------------------------------------------------------------------------------------------


def _insert_ignore(connection: sa.Connection, table: sa.Table, values: dict[str, Any]) -> None:
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    connection.execute(dialect.insert(table).values(**values).on_conflict_do_nothing())


def secret_of(session: Session, user_id: int) -> WebhookSecret:
    """The user's signing secret, created on first use (concurrent first uses agree on one). Commits."""
    row = session.get(WebhookSecret, user_id)
    if row is None:
        _insert_ignore(
            session.connection(), _secrets, {"user_id": user_id, "secret": new_secret(), "created_at": utcnow()}
        )
        session.commit()
        row = session.get(WebhookSecret, user_id)
    if row is None:  # pragma: no cover - inserted just above
        raise RuntimeError(f"no webhook secret for user {user_id}")
    return row


def rotate_secret(session: Session, user_id: int) -> WebhookSecret:
    """A new signing secret; the previous one keeps signing alongside it for ROTATION_GRACE."""
    row = secret_of(session, user_id)
    row.previous_secret = row.secret
    row.secret = new_secret()
    row.rotated_at = utcnow()
    session.add(row)
    session.commit()
    session.refresh(row)
    return row


# -- deliveries ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    """One delivery attempt to make: what to send, where, and with which secrets."""

    event_id: str
    task_id: str
    event: str
    url: str
    number: int
    body: bytes
    secrets: list[str]


BodyOf = Callable[[Session, str, str, str], bytes | None]


def claim_attempt(engine: Engine, event_id: str, body_of: BodyOf, max_attempts: int) -> Attempt | None:
    """Counts one more attempt at a pending event and returns what to send; None when the event is unknown,
    delivered or given up (a duplicate message), or has had ``max_attempts`` already (it is given up).
    ``body_of(session, kind, task_id, event)`` builds the body at the first attempt (None: the task is gone, and the
    event is given up)."""
    with Session(engine, expire_on_commit=False) as session:
        event = session.exec(select(WebhookEvent).where(WebhookEvent.id == event_id).with_for_update()).first()
        if event is None or event.status != WebhookEventStatus.pending.value:
            return None
        body = event.body if event.body is not None else body_of(session, event.kind, event.task_id, event.event)
        if body is None or event.attempts >= max_attempts:
            event.status = WebhookEventStatus.failed.value
            event.last_error = (
                "the task no longer exists" if body is None else f"gave up after {event.attempts} attempts"
            )
            event.finished_at = utcnow()
            session.add(event)
            session.commit()
            return None
        event.body = body
        event.attempts += 1
        session.add(event)
        attempt = Attempt(event.id, event.task_id, event.event, event.url, event.attempts, event.body, [])
        session.commit()
        keys = signing_secrets(secret_of(session, event.user_id))
    return dataclasses.replace(attempt, secrets=keys)


def record_attempt(
    engine: Engine, attempt: Attempt, *, status_code: int | None, error: str | None, duration_ms: int
) -> bool:
    """Records an attempt; a 2xx answer delivers the event. Returns whether it did."""
    delivered = status_code is not None and 200 <= status_code < 300
    now = utcnow()
    with engine.begin() as connection:
        connection.execute(
            sa.insert(_deliveries).values(
                event_id=attempt.event_id,
                task_id=attempt.task_id,
                attempt=attempt.number,
                status_code=status_code,
                error=None if error is None else error[:500],
                duration_ms=duration_ms,
                created_at=now,
            )
        )
        values: dict[str, Any] = {"last_error": None if delivered else (error or f"HTTP {status_code}")[:500]}
        if delivered:
            values.update(status=WebhookEventStatus.delivered.value, finished_at=now)
        connection.execute(
            sa.update(_events)
            .where(_events.c.id == attempt.event_id, _events.c.status == WebhookEventStatus.pending.value)
            .values(**values)
        )
    return delivered


def give_up(engine: Engine, event_id: str, reason: str) -> None:
    """No more attempts for this event (every retry failed)."""
    with engine.begin() as connection:
        connection.execute(
            sa.update(_events)
            .where(_events.c.id == event_id, _events.c.status == WebhookEventStatus.pending.value)
            .values(status=WebhookEventStatus.failed.value, last_error=reason[:500], finished_at=utcnow())
        )


def deliveries_of(session: Session, task_id: str) -> list[WebhookDeliveryPublic]:
    """Every delivery attempt of a task's events, oldest first. The caller checks that the task is the user's."""
    rows = session.exec(
        select(WebhookDelivery, WebhookEvent)
        .join(WebhookEvent, col(WebhookEvent.id) == col(WebhookDelivery.event_id))
        .where(WebhookDelivery.task_id == task_id)
        .order_by(col(WebhookDelivery.created_at), col(WebhookDelivery.id))
    ).all()
    return [
        WebhookDeliveryPublic(
            event_id=d.event_id,
            event=e.event,
            url=e.url,
            attempt=d.attempt,
            status_code=d.status_code,
            error=d.error,
            delivered=d.status_code is not None and 200 <= d.status_code < 300,
            duration_ms=d.duration_ms,
            created_at=d.created_at,
        )
        for d, e in rows
    ]
