"""Paid prediction tasks: submit (charge + task + outbox in one transaction), run, settle or refund."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import defer
from sqlmodel import Session, col, select

from app.core.errors import NotFound, PayloadTooLarge, Unprocessable
from app.models.base import utcnow
from app.models.catalog import ModelVersion
from app.models.task import OPEN_STATUSES, OutboxMessage, Task, TaskStatus
from app.queue.base import PREDICT_QUEUE
from app.runtime.schema import RowError, rows_from_csv, validate_rows
from app.services import catalog, ledger

_tasks: sa.Table = Task.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class PreparedRows:
    """Rows checked against a model's input schema: the accepted ones, normalised, and why the others were not."""

    accepted: list[dict[str, Any]]
    errors: list[RowError]
    total: int

    @property
    def row_numbers(self) -> list[int]:
        rejected = {e.row for e in self.errors}
        return [n for n in range(1, self.total + 1) if n not in rejected]


def _checked(accepted: list[dict[str, Any]], errors: list[RowError], max_rows: int) -> PreparedRows:
    total = len(accepted) + len({e.row for e in errors})
    if total > max_rows:
        raise PayloadTooLarge(f"too many rows: {total}; at most {max_rows} rows per request")
    return PreparedRows(accepted=accepted, errors=sorted(errors, key=lambda e: e.row), total=total)


def prepare_rows(model: ModelVersion, rows: list[Any], *, max_rows: int) -> PreparedRows:
    if len(rows) > max_rows:
        raise PayloadTooLarge(f"too many rows: {len(rows)}; at most {max_rows} rows per request")
    accepted, errors = validate_rows(catalog.features_of(model), rows)
    return _checked(accepted, errors, max_rows)


def prepare_csv(model: ModelVersion, text: str, *, max_rows: int) -> PreparedRows:
    accepted, errors = rows_from_csv(text, catalog.features_of(model))
    return _checked(accepted, errors, max_rows)


def submit(
    session: Session,
    *,
    user_id: int,
    model: ModelVersion,
    rows: PreparedRows,
    request_id: str | None = None,
) -> Task:
    """Charges for the accepted rows and queues the task, in one transaction.

    Rejected rows are reported and not charged. InsufficientFunds (402) leaves no trace.
    """
    if not rows.accepted:
        features = ", ".join(f.name for f in catalog.features_of(model))
        raise Unprocessable(
            f"no row is valid for model {model.name!r} (it expects {features}): "
            + "; ".join(e.reason for e in rows.errors[:5]),
            errors=[e.model_dump() for e in rows.errors[:100]],
        )
    cost = model.price_per_row * len(rows.accepted)
    task = Task(
        id=str(uuid.uuid4()),
        user_id=user_id,
        model_version_id=model.id or 0,
        cost=cost,
        rows_accepted=len(rows.accepted),
        rows_rejected=rows.total - len(rows.accepted),
        rows_total=rows.total,
        input_rows=rows.accepted,
        row_numbers=rows.row_numbers,
        errors=[e.model_dump() for e in rows.errors],
        request_id=request_id,
    )
    session.add(task)
    session.flush()
    ledger.charge(session, user_id=user_id, amount=cost, task_id=task.id, memo=f"{model.name} v{model.version}")
    session.add(
        OutboxMessage(task_id=task.id, queue=PREDICT_QUEUE, payload={"task_id": task.id, "request_id": request_id})
    )
    session.commit()
    return task


def get_for_user(session: Session, *, user_id: int, task_id: str) -> Task:
    # The input rows (megabytes for a big batch) load only if the caller reads them.
    lazy_rows = defer(Task.input_rows)  # type: ignore[arg-type]
    task = session.get(Task, task_id, options=[lazy_rows]) if len(task_id) <= 36 else None
    if task is None or task.user_id != user_id:
        # Another user's task is answered exactly like a missing one.
        raise NotFound(f"prediction {task_id} not found")
    return task


def list_for_user(
    session: Session, *, user_id: int, status: TaskStatus | None, limit: int, offset: int
) -> Sequence[Task]:
    query = select(Task).where(Task.user_id == user_id)
    if status is not None:
        query = query.where(Task.status == status.value)
    return session.exec(query.order_by(col(Task.created_at).desc(), col(Task.id)).limit(limit).offset(offset)).all()


def aligned_results(task: Task) -> list[Any] | None:
    """Results in the order of the submitted rows; None where a row was rejected."""
    if task.results is None:
        return None
    out: list[Any] = [None] * task.rows_total
    for number, value in zip(task.row_numbers, task.results, strict=False):
        out[number - 1] = value
    return out


def start(session: Session, task_id: str) -> Task | None:
    """Marks a task running and counts the attempt. None when it is unknown or already finished."""
    now = utcnow()
    updated = session.execute(
        sa.update(_tasks)
        .where(_tasks.c.id == task_id, _tasks.c.status.in_(OPEN_STATUSES))
        .values(
            status=TaskStatus.running.value,
            attempts=_tasks.c.attempts + 1,
            started_at=sa.func.coalesce(_tasks.c.started_at, now),
            updated_at=now,
        )
    )
    session.commit()
    if updated.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return session.get(Task, task_id)


def complete(session: Session, *, task_id: str, results: list[Any], author_share_percent: int) -> bool:
    """Stores the results and settles the charge, in one transaction, exactly once."""
    now = utcnow()
    updated = session.execute(
        sa.update(_tasks)
        .where(_tasks.c.id == task_id, _tasks.c.status.in_(OPEN_STATUSES))
        .values(status=TaskStatus.succeeded.value, results=results, finished_at=now, updated_at=now, error=None)
    )
    if updated.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        return False
    task = session.get(Task, task_id)
    model = session.get(ModelVersion, task.model_version_id) if task else None
    ledger.settle(
        session,
        task_id=task_id,
        author_user_id=model.owner_id if model else None,
        author_share_percent=author_share_percent,
    )
    session.commit()
    return True


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
    ledger.refund(session, task_id=task_id, memo="task failed")
    session.commit()
    return True


def open_task_ids(session: Session) -> list[str]:
    return list(session.exec(select(Task.id).where(col(Task.status).in_(OPEN_STATUSES))).all())


def count_by_status(session: Session) -> dict[str, int]:
    counts = {status.value: 0 for status in TaskStatus}
    for status, count in session.execute(sa.select(_tasks.c.status, sa.func.count()).group_by(_tasks.c.status)):
        counts[str(status)] = int(count)
    return counts
