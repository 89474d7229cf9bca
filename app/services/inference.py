"""Synchronous, billed inference (the Open Inference Protocol path).

The prediction runs first; then one transaction charges the rows, records the
task with its results and settles the charge to the author and the platform.
Credits move only when results are returned, and a request the balance cannot
cover is refused before any model runs.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlmodel import Session

from app.core.errors import InsufficientFunds
from app.models.base import utcnow
from app.models.catalog import ModelVersion
from app.models.task import Task, TaskStatus
from app.services import ledger


def ensure_funds(session: Session, *, user_id: int, model: ModelVersion, rows: int) -> int:
    cost = model.price_per_row * rows
    have = ledger.balance_of(session, user_id)
    session.rollback()
    if have < cost:
        raise InsufficientFunds(need=cost, have=have)
    return cost


def record_paid_inference(
    session: Session,
    *,
    user_id: int,
    model: ModelVersion,
    rows: list[dict[str, Any]],
    results: list[Any],
    author_share_percent: int,
    request_id: str | None = None,
) -> Task:
    now = utcnow()
    task = Task(
        id=str(uuid.uuid4()),
        user_id=user_id,
        kind="infer",
        model_version_id=model.id or 0,
        status=TaskStatus.succeeded.value,
        cost=model.price_per_row * len(rows),
        rows_accepted=len(rows),
        rows_total=len(rows),
        input_rows=rows,
        row_numbers=list(range(1, len(rows) + 1)),
        results=results,
        attempts=1,
        request_id=request_id,
        started_at=now,
        finished_at=now,
    )
    session.add(task)
    session.flush()
    ledger.charge(session, user_id=user_id, amount=task.cost, task_id=task.id, memo=f"{model.name} v{model.version}")
    ledger.settle(session, task_id=task.id, author_user_id=model.owner_id, author_share_percent=author_share_percent)
    session.commit()
    return task
