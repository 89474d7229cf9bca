"""Paid prediction tasks: submit (charge + task + outbox in one transaction), run, settle or refund.

Both ends work in batches: the API queues every submission that arrives while
the last batch is written in one transaction (``submit_many``), and a worker
starts and settles the tasks it holds together (``start_many``,
``complete_many``), with set-based statements whose number does not grow with
the batch. Each task still moves money exactly as if it were alone.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import defer
from sqlmodel import Session, col, select

from app.core.errors import InsufficientFunds, NotFound, PayloadTooLarge, ServiceUnavailable, Unprocessable
from app.core.notify import OUTBOX_CHANNEL, TASKS_CHANNEL, Watchers
from app.models.base import utcnow
from app.models.catalog import ModelVersion
from app.models.ledger import ChargeHold, EntryKind, HoldStatus, LedgerEntry
from app.models.task import OPEN_STATUSES, OutboxMessage, Task, TaskStatus
from app.queue.base import PREDICT_QUEUE
from app.runtime.schema import (
    Feature,
    RowError,
    number_columns,
    number_columns_from_csv,
    rows_from_csv,
    validate_rows,
)
from app.services import api_keys, billing, catalog, ledger, oip, tabular, webhooks
from app.services.billing import Priced

_tasks: sa.Table = Task.__table__  # type: ignore[attr-defined]
_holds: sa.Table = ChargeHold.__table__  # type: ignore[attr-defined]
_entries: sa.Table = LedgerEntry.__table__  # type: ignore[attr-defined]
_outbox: sa.Table = OutboxMessage.__table__  # type: ignore[attr-defined]

# Who waits for a task in this process (``Prefer: wait``, the event stream): told when a worker's commit
# starts or finishes it, in this process directly, from others through NOTIFY on TASKS_CHANNEL.
WATCHERS = Watchers()
STARTED = "started"
FINISHED = "finished"
# Task ids per NOTIFY payload: 36 characters and a comma each, under PostgreSQL's 8000-byte limit.
MAX_IDS_PER_NOTICE = 200


@dataclass(frozen=True)
class PreparedRows:
    """Rows checked against a model's input schema: the accepted ones as one array per feature, and why the
    others were not accepted."""

    columns: dict[str, np.ndarray[Any, Any]]
    accepted: int
    errors: list[RowError]
    total: int

    @property
    def row_numbers(self) -> list[int] | None:
        """1-based request position of each accepted row; None when every row was accepted."""
        if not self.errors:
            return None
        rejected = {e.row for e in self.errors}
        return [n for n in range(1, self.total + 1) if n not in rejected]


def _check_count(total: int, max_rows: int) -> None:
    if total > max_rows:
        raise PayloadTooLarge(f"too many rows: {total}; at most {max_rows} rows per request")


def _all_accepted(columns: dict[str, np.ndarray[Any, Any]], max_rows: int) -> PreparedRows:
    """Columns read whole (app.runtime.schema's column-wise readers): every row accepted."""
    total = len(next(iter(columns.values())))
    _check_count(total, max_rows)
    return PreparedRows(columns=columns, accepted=total, errors=[], total=total)


def _checked(
    features: list[Feature], accepted: list[dict[str, Any]], errors: list[RowError], max_rows: int
) -> PreparedRows:
    total = len(accepted) + len({e.row for e in errors})
    _check_count(total, max_rows)
    return PreparedRows(
        columns=oip.columns_of_rows(accepted, features),
        accepted=len(accepted),
        errors=sorted(errors, key=lambda e: e.row),
        total=total,
    )


def prepare_rows(features: list[Feature], rows: list[Any], *, max_rows: int) -> PreparedRows:
    _check_count(len(rows), max_rows)
    columns = number_columns(features, rows)
    if columns is not None:
        return _all_accepted(columns, max_rows)
    accepted, errors = validate_rows(features, rows)
    return _checked(features, accepted, errors, max_rows)


def prepare_csv(features: list[Feature], text: str, *, max_rows: int) -> PreparedRows:
    columns = number_columns_from_csv(text, features)
    if columns is not None:
        return _all_accepted(columns, max_rows)
    accepted, errors = rows_from_csv(text, features)
    return _checked(features, accepted, errors, max_rows)


@dataclass
class Submission:
    """One paid prediction to queue: who pays, for which version, the checked rows."""

    user_id: int
    model: Priced
    features: list[Feature]
    rows: PreparedRows
    request_id: str | None = None
    task_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    webhook: webhooks.Target | None = None  # told when the task starts or finishes, as it asked
    api_key_id: int | None = None  # the API key that pays (its limit is checked), None for a login token

    @property
    def cost(self) -> int:
        return self.model.price_per_row * self.rows.accepted

    def check(self) -> None:
        if not self.rows.accepted:
            features = ", ".join(f.name for f in self.features)
            raise Unprocessable(
                f"no row is valid for model {self.model.name!r} (it expects {features}): "
                + "; ".join(e.reason for e in self.rows.errors[:5]),
                errors=[e.model_dump() for e in self.rows.errors[:100]],
            )


@dataclass(frozen=True)
class Queued:
    task_id: str
    cost: int
    created_at: datetime


def submit_many(engine: Engine, submissions: list[Submission]) -> list[Queued | BaseException]:
    """Charges for and queues each submission; one transaction for the lot, with set-based statements.

    Each submission is reserved against its payer's locked balance in arrival order; one its payer cannot
    cover, or whose API key is revoked or would pass its monthly spend limit, is refused alone (402 or 401, no
    trace). The rest get their task, charge hold, charge entry and outbox
    row, and the relays are told (NOTIFY) when the transaction commits. Should the batch fail in the
    database, each submission is tried alone so that only the one at fault fails.
    """
    return billing.each_alone_on_failure(lambda batch: _submit_many(engine, batch), submissions, "queueing")


def _submit_many(engine: Engine, submissions: list[Submission]) -> list[Queued | BaseException]:
    results: list[Queued | BaseException | None] = [None] * len(submissions)
    now = utcnow()
    with engine.connect() as connection, connection.begin():
        locked = billing.lock_accounts(connection, {s.user_id for s in submissions}, platform=False)
        keys = api_keys.KeySpends(connection, {s.api_key_id for s in submissions if s.api_key_id is not None}, now)
        key_charges: list[tuple[str, int, int]] = []
        ledger = billing.BatchLedger(balances=dict(locked.balances))
        tasks: list[dict[str, Any]] = []
        holds: list[dict[str, Any]] = []
        outbox: list[dict[str, Any]] = []
        subscriptions: list[dict[str, Any]] = []
        for i, sub in enumerate(submissions):
            payer = locked.account_of.get(sub.user_id)
            if payer is None:
                results[i] = NotFound(f"no account for user {sub.user_id}")
                continue
            if ledger.balances[payer] < sub.cost:
                results[i] = InsufficientFunds(need=sub.cost, have=ledger.balances[payer])
                continue
            refused = keys.reserve(sub.api_key_id, sub.cost)
            if refused is not None:
                results[i] = refused
                continue
            if sub.api_key_id is not None:
                key_charges.append((sub.task_id, sub.api_key_id, sub.cost))
            ledger.move(payer, -sub.cost, EntryKind.charge, sub.task_id, f"{sub.model.name} v{sub.model.version}")
            tasks.append(_task_row(sub, now))
            if sub.webhook is not None:
                subscriptions.append(
                    webhooks.subscription_row(sub.task_id, webhooks.PREDICTION, sub.user_id, sub.webhook, now)
                )
            holds.append(
                {
                    "task_id": sub.task_id,
                    "account_id": payer,
                    "amount": sub.cost,
                    "status": HoldStatus.held.value,
                    "created_at": now,
                }
            )
            outbox.append(
                {
                    "task_id": sub.task_id,
                    "queue": PREDICT_QUEUE,
                    "payload": {"task_id": sub.task_id, "request_id": sub.request_id},
                    "created_at": now,
                    "publish_attempts": 0,
                }
            )
            results[i] = Queued(task_id=sub.task_id, cost=sub.cost, created_at=now)
        if tasks:
            billing.write_rows(
                connection,
                [
                    (_tasks, tasks),
                    (_holds, holds),
                    (_entries, ledger.stamped_entries(now)),
                    (_outbox, outbox),
                    (webhooks.SUBSCRIPTIONS_TABLE, subscriptions),
                    (api_keys.CHARGES_TABLE, api_keys.charge_rows(key_charges, keys.month)),
                ],
                ledger.deltas(),
                notify=(OUTBOX_CHANNEL, ""),
            )
        keys.write(connection)
    ledger.count()
    return [r if r is not None else ServiceUnavailable("the request was not queued; retry it") for r in results]


def _task_row(sub: Submission, now: datetime) -> dict[str, Any]:
    return {
        "id": sub.task_id,
        "user_id": sub.user_id,
        "kind": "predict",
        "model_version_id": sub.model.id,
        "status": TaskStatus.queued.value,
        "cost": sub.cost,
        "rows_accepted": sub.rows.accepted,
        "rows_rejected": sub.rows.total - sub.rows.accepted,
        "rows_total": sub.rows.total,
        "inputs": tabular.pack_columns(sub.rows.columns, sub.features),
        "row_numbers": sub.rows.row_numbers,
        "errors": [e.model_dump() for e in sub.rows.errors],
        "attempts": 0,
        "request_id": sub.request_id,
        "created_at": now,
        "updated_at": now,
    }


def submit(
    session: Session, *, user_id: int, model: ModelVersion, rows: PreparedRows, request_id: str | None = None
) -> Queued:
    """One submission on its own (scripts and tests); the API batches concurrent ones with submit_many."""
    sub = Submission(
        user_id=user_id,
        model=priced(model),
        features=catalog.features_of(model),
        rows=rows,
        request_id=request_id,
    )
    sub.check()
    session.close()
    (result,) = submit_many(session.get_bind(), [sub])  # type: ignore[arg-type]
    if isinstance(result, BaseException):
        raise result
    return result


def priced(model: ModelVersion) -> Priced:
    return Priced(model.id or 0, model.name, model.version, model.price_per_row, model.owner_id)


def get_for_user(
    session: Session, *, user_id: int, task_id: str, with_inputs: bool = True, with_outputs: bool = True
) -> Task:
    # The rows and results (megabytes for a big batch) load only when asked for.
    columns = ((Task.inputs, with_inputs), (Task.outputs, with_outputs))
    options = [defer(c) for c, wanted in columns if not wanted]  # type: ignore[arg-type]
    task = session.get(Task, task_id, options=options) if len(task_id) <= 36 else None
    if task is None or task.user_id != user_id:
        # Another user's task is answered exactly like a missing one.
        raise NotFound(f"prediction {task_id} not found")
    return task


def list_for_user(
    session: Session, *, user_id: int, status: TaskStatus | None, limit: int, offset: int
) -> Sequence[Task]:
    query = (
        select(Task)
        .options(defer(Task.inputs), defer(Task.outputs))  # type: ignore[arg-type]
        .where(Task.user_id == user_id)
    )
    if status is not None:
        query = query.where(Task.status == status.value)
    return session.exec(query.order_by(col(Task.created_at).desc(), col(Task.id)).limit(limit).offset(offset)).all()


def row_numbers_of(task: Task) -> list[int]:
    return list(task.row_numbers) if task.row_numbers is not None else list(range(1, task.rows_accepted + 1))


def aligned_results(task: Task) -> list[Any] | None:
    """Results in the order of the submitted rows; None where a row was rejected."""
    values = tabular.unpack_values(task.outputs)
    if values is None:
        return None
    if task.row_numbers is None:
        return values
    out: list[Any] = [None] * task.rows_total
    for number, value in zip(task.row_numbers, values, strict=False):
        out[number - 1] = value
    return out


# -- the worker's side: start a batch, settle it, or fail one task --------------------------------------------


@dataclass(frozen=True)
class Started:
    """A task a worker now runs: what it needs to predict."""

    id: str
    model_version_id: int
    attempts: int
    rows: int
    inputs: bytes


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
                    _tasks.c.id, _tasks.c.model_version_id, _tasks.c.attempts, _tasks.c.rows_accepted, _tasks.c.inputs
                )
            ).all()
        webhooks.record_events(connection, [row[0] for row in rows], webhooks.STARTED)
    WATCHERS.tell([row[0] for row in rows], STARTED)
    return [Started(r[0], r[1], r[2], r[3], bytes(r[4])) for r in rows]


# PostgreSQL: start the tasks and NOTIFY their ids (at most MAX_IDS_PER_NOTICE per notice) in one statement.
_START_SQL = (
    "WITH s AS (UPDATE tasks SET status = 'running', attempts = attempts + 1, "
    "started_at = coalesce(started_at, %b), updated_at = %b "
    "WHERE id = ANY(%b::VARCHAR[]) AND status IN ('queued', 'running') "
    "RETURNING id, model_version_id, attempts, rows_accepted, inputs), "
    "n AS (SELECT pg_notify(%b::text, 'started:' || string_agg(id, ',')) "
    "FROM (SELECT id, (row_number() OVER () - 1) / %b::int AS g FROM s) AS x GROUP BY g) "
    "SELECT s.id, s.model_version_id, s.attempts, s.rows_accepted, s.inputs, (SELECT count(*) FROM n) FROM s"
)

# PostgreSQL: store each open task's results, close its hold; returns (task id, held amount or NULL).
_FINISH_SQL = (
    "WITH f AS (UPDATE tasks SET status = 'succeeded', outputs = u.outputs, finished_at = %b, updated_at = %b, "
    "error = NULL FROM unnest(%b::VARCHAR[], %b::BYTEA[]) AS u(id, outputs) "
    "WHERE tasks.id = u.id AND tasks.status IN ('queued', 'running') RETURNING tasks.id), "
    "h AS (UPDATE charge_holds SET status = 'settled', closed_at = %b "
    "WHERE task_id IN (SELECT id FROM f) AND status = 'held' RETURNING task_id, amount) "
    "SELECT f.id, h.amount FROM f LEFT JOIN h ON h.task_id = f.id"
)


@dataclass(frozen=True)
class Done:
    """A task's predictions, to store and settle; ``author_id`` is the model's author (paid their share)."""

    task_id: str
    predictions: np.ndarray[Any, Any]
    author_id: int | None


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
    outputs = {d.task_id: tabular.pack_values(d.predictions) for d in done}
    author_of = {d.task_id: d.author_id for d in done}
    with engine.connect() as connection, connection.begin():
        # the accounts first (in id order, as every batch locks them), then the tasks
        locked = billing.lock_accounts(connection, {a for a in author_of.values() if a is not None})
        held = _finish(connection, outputs, now)
        finished = sorted(held)
        webhooks.record_events(connection, finished, webhooks.COMPLETED)
        ledger = billing.BatchLedger(balances=dict(locked.balances))
        billing.pay_out(
            ledger,
            locked,
            [(d.task_id, amount, d.author_id) for d in done if (amount := held.get(d.task_id)) is not None],
            author_share_percent,
        )
        first, rest = finished[:MAX_IDS_PER_NOTICE], finished[MAX_IDS_PER_NOTICE:]
        notice = (TASKS_CHANNEL, f"{FINISHED}:{','.join(first)}") if first and _is_pg(connection) else None
        billing.write_rows(connection, [(_entries, ledger.stamped_entries(now))], ledger.deltas(), notify=notice)
        _tell(connection, rest, FINISHED)
    ledger.count()
    WATCHERS.tell(finished, FINISHED)
    return set(finished)


def _is_pg(connection: sa.Connection) -> bool:
    return connection.dialect.name == "postgresql"


def _finish(connection: sa.Connection, outputs: dict[str, bytes], now: datetime) -> dict[str, int | None]:
    """Marks the open ones of the tasks succeeded with their results and closes their holds: task id → the
    amount of the hold closed now (None if it was closed before)."""
    if _is_pg(connection):
        rows = connection.exec_driver_sql(_FINISH_SQL, (now, now, list(outputs), list(outputs.values()), now))
        return {row[0]: None if row[1] is None else int(row[1]) for row in rows}
    held: dict[str, int | None] = {}
    for task_id, data in outputs.items():
        updated = connection.execute(
            sa.update(_tasks)
            .where(_tasks.c.id == task_id, _tasks.c.status.in_(OPEN_STATUSES))
            .values(status=TaskStatus.succeeded.value, outputs=data, finished_at=now, updated_at=now, error=None)
        )
        if updated.rowcount != 1:
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
    updated = session.execute(
        sa.update(_tasks)
        .where(_tasks.c.id == task_id, _tasks.c.status.in_(OPEN_STATUSES))
        .values(status=TaskStatus.failed.value, error=reason[:2000], finished_at=now, updated_at=now)
    )
    if updated.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
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


def open_task_ids(session: Session) -> list[str]:
    return list(session.exec(select(Task.id).where(col(Task.status).in_(OPEN_STATUSES))).all())


def count_by_status(session: Session) -> dict[str, int]:
    counts = {status.value: 0 for status in TaskStatus}
    for status, count in session.execute(sa.select(_tasks.c.status, sa.func.count()).group_by(_tasks.c.status)):
        counts[str(status)] = int(count)
    return counts
