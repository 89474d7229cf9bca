"""Synchronous, billed inference (the Open Inference Protocol path).

The prediction runs first; then one transaction charges the rows, records the
task with its results and settles the charge to the author and the platform.
Credits move only when results are returned, and a request the balance cannot
cover is refused before any model runs.

Concurrent requests are billed together (``record_paid_inferences``): one
transaction, each request in a savepoint of its own, so that one whose charge
fails is rolled back alone while the others are committed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session

from app.core.errors import AppError, InsufficientFunds
from app.models.base import utcnow
from app.models.catalog import ModelVersion
from app.models.task import Task, TaskStatus
from app.services import ledger


def ensure_funds_many(session: Session, checks: list[tuple[int, ModelVersion, int]]) -> list[int | AppError]:
    """``ensure_funds`` for several requests ``(user_id, model, rows)`` in one read transaction.

    Each is checked on its own against the balance (as separate calls would be); returns the cost, or the
    ``InsufficientFunds`` error in its place.
    """
    out: list[int | AppError] = []
    balances: dict[int, int] = {}
    try:
        for user_id, model, rows in checks:
            cost = model.price_per_row * rows
            try:
                have = balances[user_id] if user_id in balances else ledger.balance_of(session, user_id)
            except AppError as exc:
                out.append(exc)
                continue
            balances[user_id] = have
            out.append(cost if have >= cost else InsufficientFunds(need=cost, have=have))
    finally:
        session.rollback()
    return out


def ensure_funds(session: Session, *, user_id: int, model: ModelVersion, rows: int) -> int:
    cost = model.price_per_row * rows
    have = ledger.balance_of(session, user_id)
    session.rollback()
    if have < cost:
        raise InsufficientFunds(need=cost, have=have)
    return cost


@dataclass
class PaidInference:
    """One answered inference request, to be billed."""

    user_id: int
    model: ModelVersion
    rows: list[dict[str, Any]]
    results: list[Any]
    request_id: str | None = None


def _record(session: Session, item: PaidInference, author_share_percent: int) -> Task:
    model = item.model
    now = utcnow()
    task = Task(
        id=str(uuid.uuid4()),
        user_id=item.user_id,
        kind="infer",
        model_version_id=model.id or 0,
        status=TaskStatus.succeeded.value,
        cost=model.price_per_row * len(item.rows),
        rows_accepted=len(item.rows),
        rows_total=len(item.rows),
        input_rows=item.rows,
        row_numbers=list(range(1, len(item.rows) + 1)),
        results=item.results,
        attempts=1,
        request_id=item.request_id,
        started_at=now,
        finished_at=now,
    )
    session.add(task)
    session.flush()
    ledger.charge(
        session, user_id=item.user_id, amount=task.cost, task_id=task.id, memo=f"{model.name} v{model.version}"
    )
    ledger.settle(session, task_id=task.id, author_user_id=model.owner_id, author_share_percent=author_share_percent)
    return task


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
    task = _record(session, PaidInference(user_id, model, rows, results, request_id), author_share_percent)
    session.commit()
    return task


def record_paid_inferences(
    session: Session, items: list[PaidInference], *, author_share_percent: int
) -> list[Task | AppError]:
    """Bills several requests in one transaction, each in a savepoint of its own.

    Returns, in order, each request's task or the error that refused it (a balance that ran short since
    ``ensure_funds``): that request's savepoint is rolled back and nothing of it is kept, the others commit.
    Any other error rolls back the whole transaction and is raised.
    """
    out: list[Task | AppError] = []
    for item in items:
        try:
            with session.begin_nested():
                out.append(_record(session, item, author_share_percent))
        except AppError as exc:
            out.append(exc)
    session.commit()
    return out
