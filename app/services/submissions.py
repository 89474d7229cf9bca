"""Submitting paid prediction tasks: the charge, the task, its hold and its outbox row in one transaction.

The API queues every submission that arrives while the last batch is written and writes the lot in one
transaction (``submit_many``); each task still moves money exactly as if it were alone.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from app.core.errors import InsufficientFunds, NotFound, ServiceUnavailable, Unprocessable
from app.core.notify import OUTBOX_CHANNEL
from app.models.base import utcnow
from app.models.catalog import ModelVersion
from app.models.ledger import ChargeHold, EntryKind, HoldStatus, LedgerEntry
from app.models.task import OutboxMessage, Task, TaskStatus
from app.queue.base import PREDICT_QUEUE
from app.runtime.schema import Feature
from app.services import api_keys, batch_ledger, catalog, tabular, webhooks
from app.services.billing import Priced
from app.services.predictions import PreparedRows

_tasks: sa.Table = Task.__table__  # type: ignore[attr-defined]
_holds: sa.Table = ChargeHold.__table__  # type: ignore[attr-defined]
_entries: sa.Table = LedgerEntry.__table__  # type: ignore[attr-defined]
_outbox: sa.Table = OutboxMessage.__table__  # type: ignore[attr-defined]


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
    probabilities: bool = False  # the worker also stores each row's class probabilities (the same price)

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
    return batch_ledger.each_alone_on_failure(lambda batch: _submit_many(engine, batch), submissions, "queueing")


def _submit_many(engine: Engine, submissions: list[Submission]) -> list[Queued | BaseException]:
    results: list[Queued | BaseException | None] = [None] * len(submissions)
    now = utcnow()
    with engine.connect() as connection, connection.begin():
        locked = batch_ledger.lock_accounts(connection, {s.user_id for s in submissions}, platform=False)
        keys = api_keys.KeySpends(connection, {s.api_key_id for s in submissions if s.api_key_id is not None}, now)
        key_charges: list[tuple[str, int, int]] = []
        ledger = batch_ledger.BatchLedger(balances=dict(locked.balances))
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
            batch_ledger.write_rows(
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
        "wants_probabilities": True if sub.probabilities else None,
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
