"""Paid prediction tasks: rows checked against a model's schema before submission, the tasks a user reads back,
and who waits for them in this process.

Submitting (the charge, the task and its outbox row in one transaction) is in app.services.submissions; the
worker's side (start, settle, fail) in app.services.task_runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import defer
from sqlmodel import Session, col, select

from app.core.errors import NotFound, PayloadTooLarge
from app.core.notify import Watchers
from app.models.task import OPEN_STATUSES, Task, TaskStatus
from app.runtime.schema import (
    Feature,
    RowError,
    number_columns,
    number_columns_from_csv,
    rows_from_csv,
    validate_rows,
)
from app.services import oip_columns, tabular

_tasks: sa.Table = Task.__table__  # type: ignore[attr-defined]

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
        columns=oip_columns.columns_of_rows(accepted, features),
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


def get_for_user(
    session: Session, *, user_id: int, task_id: str, with_inputs: bool = True, with_outputs: bool = True
) -> Task:
    # The rows and results (megabytes for a big batch) load only when asked for.
    columns = ((Task.inputs, with_inputs), (Task.outputs, with_outputs), (Task.probability_data, with_outputs))
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
        .options(defer(Task.inputs), defer(Task.outputs), defer(Task.probability_data))  # type: ignore[arg-type]
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


def aligned_probabilities(task: Task) -> tuple[list[Any], list[list[float] | None]] | None:
    """A task's classes and, in the order of the submitted rows, each row's probabilities (None where a row was
    rejected); None for a task that did not ask for them or has no results yet."""
    stored = tabular.unpack_probabilities(task.probability_data) if task.wants_probabilities else None
    if stored is None:
        return None
    classes, rows = stored
    if task.row_numbers is None:
        return classes, list(rows)
    out: list[list[float] | None] = [None] * task.rows_total
    for number, row in zip(task.row_numbers, rows, strict=False):
        out[number - 1] = row
    return classes, out


def open_task_ids(session: Session) -> list[str]:
    return list(session.exec(select(Task.id).where(col(Task.status).in_(OPEN_STATUSES))).all())


def count_by_status(session: Session) -> dict[str, int]:
    counts = {status.value: 0 for status in TaskStatus}
    for status, count in session.execute(sa.select(_tasks.c.status, sa.func.count()).group_by(_tasks.c.status)):
        counts[str(status)] = int(count)
    return counts
