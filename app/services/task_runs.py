"""The worker's side of paid prediction tasks: start a batch, settle it (results stored, author paid), or fail
one task (refunded exactly once).

A worker starts and settles the tasks it holds together (``start_many``, ``complete_many``), with set-based
statements whose number does not grow with the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from app.core.notify import TASKS_CHANNEL
from app.models.base import utcnow
from app.models.ledger import ChargeHold, HoldStatus, LedgerEntry
from app.models.task import OPEN_STATUSES, Task, TaskStatus
from app.services import api_keys, batch_ledger, guarded, ledger, tabular, webhooks
from app.services.predictions import FINISHED, MAX_IDS_PER_NOTICE, STARTED, WATCHERS

_tasks: sa.Table = Task.__table__  # type: ignore[attr-defined]
_holds: sa.Table = ChargeHold.__table__  # type: ignore[attr-defined]
_entries: sa.Table = LedgerEntry.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Started:
    """A task a worker now runs: what it needs to predict."""

    id: str
    model_version_id: int
    attempts: int
    rows: int
    inputs: bytes
    wants_probabilities: bool = False


def start_many(engine: Engine, task_ids: list[str]) -> list[Started]:
    """Marks the open ones of ``task_ids`` running and counts the attempt, in one statement and transaction
    (with the NOTIFY that tells waiting requests). Unknown and finished tasks are left out (a duplicate or
    late message)."""
    if not task_ids:
        return []
    now = utcnow()
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            rows = connection.exec_driver_sql(_START_SQL, (now, now, task_ids, TASKS_CHANNEL, MAX_IDS_PER_NOTICE)).all()
        else:
            rows = connection.execute(
                sa.update(_tasks)
                .where(_tasks.c.id.in_(task_ids), _tasks.c.status.in_(OPEN_STATUSES))
                .values(
                    status=TaskStatus.running.value,
                    attempts=_tasks.c.attempts + 1,
                    started_at=sa.func.coalesce(_tasks.c.started_at, now),
                    updated_at=now,
                )
                .returning(
                    _tasks.c.id,
                    _tasks.c.model_version_id,
                    _tasks.c.attempts,
                    _tasks.c.rows_accepted,
                    _tasks.c.inputs,
                    _tasks.c.wants_probabilities,
                )
            ).all()
        webhooks.record_events(connection, [row[0] for row in rows], webhooks.STARTED)
    WATCHERS.tell([row[0] for row in rows], STARTED)
    return [Started(r[0], r[1], r[2], r[3], bytes(r[4]), bool(r[5])) for r in rows]


# PostgreSQL: start the tasks and NOTIFY their ids (at most MAX_IDS_PER_NOTICE per notice) in one statement.
_START_SQL = (
    "WITH s AS (UPDATE tasks SET status = 'running', attempts = attempts + 1, "
    "started_at = coalesce(started_at, %b), updated_at = %b "
    "WHERE id = ANY(%b::VARCHAR[]) AND status IN ('queued', 'running') "
    "RETURNING id, model_version_id, attempts, rows_accepted, inputs, wants_probabilities), "
    "n AS (SELECT pg_notify(%b::text, 'started:' || string_agg(id, ',')) "
    "FROM (SELECT id, (row_number() OVER () - 1) / %b::int AS g FROM s) AS x GROUP BY g) "
    "SELECT s.id, s.model_version_id, s.attempts, s.rows_accepted, s.inputs, s.wants_probabilities, "
    "(SELECT count(*) FROM n) FROM s"
)

# PostgreSQL: store each open task's results, close its hold; returns (task id, held amount or NULL).
_FINISH_SQL = (
    "WITH f AS (UPDATE tasks SET status = 'succeeded', outputs = u.outputs, probability_data = u.probabilities, "
    "finished_at = %b, updated_at = %b, error = NULL "
    "FROM unnest(%b::VARCHAR[], %b::BYTEA[], %b::BYTEA[]) AS u(id, outputs, probabilities) "
    "WHERE tasks.id = u.id AND tasks.status IN ('queued', 'running') RETURNING tasks.id), "
    "h AS (UPDATE charge_holds SET status = 'settled', closed_at = %b "
    "WHERE task_id IN (SELECT id FROM f) AND status = 'held' RETURNING task_id, amount) "
    "SELECT f.id, h.amount FROM f LEFT JOIN h ON h.task_id = f.id"
)


@dataclass(frozen=True)
class Done:
    """A task's predictions, to store and settle; ``author_id`` is the model's author (paid their share);
    ``probabilities``: the stored class probabilities (app.services.tabular.pack_probabilities) of a task that
    asked for them."""

    task_id: str
    predictions: np.ndarray[Any, Any]
    author_id: int | None
    probabilities: bytes | None = None


def complete_many(engine: Engine, done: list[Done], *, author_share_percent: int) -> set[str]:
    """Stores the predictions of each task and settles its charge, all in one transaction.

    Only tasks still open are settled (a task finished by another worker or refunded meanwhile is left as it
    is): exactly once each. PostgreSQL: the authors' and the platform's accounts locked, the tasks finished
    and their holds closed, the entries written and the balances moved (and waiting requests told): three
    statements whatever the batch size. Returns the ids settled now.
    """
    if not done:
        return set()
    now = utcnow()
    outputs = {d.task_id: (tabular.pack_values(d.predictions), d.probabilities) for d in done}
    author_of = {d.task_id: d.author_id for d in done}
    with engine.connect() as connection, connection.begin():
        # the accounts first (in id order, as every batch locks them), then the tasks
        locked = batch_ledger.lock_accounts(connection, {a for a in author_of.values() if a is not None})
        held = _finish(connection, outputs, now)
        finished = sorted(held)
        webhooks.record_events(connection, finished, webhooks.COMPLETED)
        ledger = batch_ledger.BatchLedger(balances=dict(locked.balances))
        batch_ledger.pay_out(
            ledger,
            locked,
            [(d.task_id, amount, d.author_id) for d in done if (amount := held.get(d.task_id)) is not None],
            author_share_percent,
        )
        first, rest = finished[:MAX_IDS_PER_NOTICE], finished[MAX_IDS_PER_NOTICE:]
        notice = (TASKS_CHANNEL, f"{FINISHED}:{','.join(first)}") if first and _is_pg(connection) else None
        batch_ledger.write_rows(connection, [(_entries, ledger.stamped_entries(now))], ledger.deltas(), notify=notice)
        _tell(connection, rest, FINISHED)
    ledger.count()
    WATCHERS.tell(finished, FINISHED)
    return set(finished)


def _is_pg(connection: sa.Connection) -> bool:
    return connection.dialect.name == "postgresql"


def _finish(
    connection: sa.Connection, outputs: dict[str, tuple[bytes, bytes | None]], now: datetime
) -> dict[str, int | None]:
    """Marks the open ones of the tasks succeeded with their results (and probabilities) and closes their holds:
    task id → the amount of the hold closed now (None if it was closed before)."""
    if _is_pg(connection):
        results = [o[0] for o in outputs.values()]
        probabilities = [o[1] for o in outputs.values()]
        rows = connection.exec_driver_sql(_FINISH_SQL, (now, now, list(outputs), results, probabilities, now))
        return {row[0]: None if row[1] is None else int(row[1]) for row in rows}
    held: dict[str, int | None] = {}
    for task_id, (data, probability_data) in outputs.items():
        succeeded = dict(
            status=TaskStatus.succeeded.value,
            outputs=data,
            probability_data=probability_data,
            finished_at=now,
            updated_at=now,
            error=None,
        )
        if not guarded.changed(connection, _tasks, task_id, succeeded, statuses=OPEN_STATUSES):
            continue
        amount = connection.execute(
            sa.update(_holds)
            .where(_holds.c.task_id == task_id, _holds.c.status == HoldStatus.held.value)
            .values(status=HoldStatus.settled.value, closed_at=now)
            .returning(_holds.c.amount)
        ).scalar_one_or_none()
        held[task_id] = None if amount is None else int(amount)
    return held


def fail(session: Session, *, task_id: str, reason: str) -> bool:
    """Marks a task failed and refunds its charge, in one transaction, exactly once."""
    now = utcnow()
    failed = dict(status=TaskStatus.failed.value, error=reason[:2000], finished_at=now, updated_at=now)
    if not guarded.change_status(session, _tasks, task_id, failed, statuses=OPEN_STATUSES):
        return False
    if ledger.refund(session, task_id=task_id, memo="task failed"):
        api_keys.give_back(session, task_id=task_id)
    webhooks.record_events(session.connection(), [task_id], webhooks.COMPLETED)
    _tell(session.connection(), [task_id], FINISHED)
    session.commit()
    WATCHERS.tell([task_id], FINISHED)
    return True


# -- who is told: waiting requests (Prefer: wait, the event stream) -----------------------------------------


def _tell(connection: sa.Connection, task_ids: list[str], event: str) -> None:
    """NOTIFY the API processes (PostgreSQL) that these tasks started or finished, when this transaction
    commits; the payload is ``event:id,id,…`` (app.core.notify.Watchers.on_notice)."""
    if not task_ids or connection.dialect.name != "postgresql":
        return
    per = MAX_IDS_PER_NOTICE
    for i in range(0, len(task_ids), per):
        payload = f"{event}:{','.join(task_ids[i : i + per])}"
        connection.exec_driver_sql("SELECT pg_notify(%s, %s)", (TASKS_CHANNEL, payload))
