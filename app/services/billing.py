"""Serving and billing a batch of synchronous inference requests in one transaction, with set-based SQL.

For a batch of orders (each: a user, a model version, checked rows) one
transaction does, in this order:

1. lock the accounts involved (payers, authors, the platform) in id order and
   read their balances: one ``SELECT … FOR UPDATE``; then, likewise, the API
   keys the orders were sent with (app.services.api_keys);
2. reserve each order's cost from its payer, in arrival order; an order its
   payer's remaining balance cannot cover, or whose API key is revoked or would
   pass its monthly spend limit, is refused alone (402, 401) and no model runs
   for it; the reservation is one conditional ``UPDATE`` per payer;
3. run one ``predict`` per model on the rows of the orders that were paid for;
4. write every paid order's task (succeeded, with its rows and results), its
   settled charge hold and its ledger entries (charge, author's payout,
   platform fee; each with its running ``balance_after``) with one multi-row
   ``INSERT`` per table, and credit authors and the platform (and return the
   reservation of an order whose model failed) with one ``UPDATE`` per account;
5. commit.

Every rule of the ledger holds for each task as if it were billed alone:
exactly one charge and one settlement per task, balance == sum of entries,
no balance below zero. The number of statements depends on the number of
distinct accounts, not on the number of requests. Orders are checked before
they get here (app.services.oip), so one request's data cannot fail the batch;
should a statement fail anyway, each order is billed alone so that only the
one at fault fails.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from app.core.errors import (
    AppError,
    Conflict,
    InsufficientFunds,
    NotFound,
    ServiceUnavailable,
    Unprocessable,
)
from app.models.base import utcnow
from app.models.ledger import ChargeHold, EntryKind, HoldStatus, LedgerEntry
from app.models.task import Task, TaskStatus
from app.runtime.schema import Feature
from app.services import api_keys, batch_ledger, tabular

log = logging.getLogger("mlmarket.billing")

_entries: sa.Table = LedgerEntry.__table__  # type: ignore[attr-defined]
_holds: sa.Table = ChargeHold.__table__  # type: ignore[attr-defined]
_tasks: sa.Table = Task.__table__  # type: ignore[attr-defined]


class Predictor(Protocol):
    def predict_columns(self, columns: dict[str, np.ndarray[Any, Any]], n: int) -> np.ndarray[Any, Any]: ...


class NoProbabilities(Unprocessable):
    """Class probabilities were asked of a model that does not give them (a regressor)."""


@dataclass(frozen=True)
class Predicted:
    """One predict call's output: a value per row, and (when asked) each row's probability per class."""

    values: np.ndarray[Any, Any]
    probabilities: np.ndarray[Any, Any] | None = None
    classes: list[Any] | None = None


def gives_probabilities(predictor: Any) -> bool:
    """Whether the loaded model gives class probabilities (a classifier with ``predict_with_probabilities``)."""
    return bool(getattr(predictor, "gives_probabilities", False))


def predict(predictor: Any, columns: dict[str, np.ndarray[Any, Any]], n: int, probabilities: bool) -> Predicted:
    """The predictions of ``n`` rows; with ``probabilities``, from the same call, each row's class probabilities."""
    if not probabilities:
        return Predicted(np.asarray(predictor.predict_columns(columns, n)))
    if not gives_probabilities(predictor):
        raise NoProbabilities("this model does not give class probabilities; only classifiers do")
    values, matrix = predictor.predict_with_probabilities(columns, n)
    return Predicted(np.asarray(values), np.asarray(matrix, dtype=np.float64), list(predictor.classes))


def join(parts: list[Predicted]) -> Predicted:
    """The outputs of consecutive chunks of rows as one."""
    values = np.concatenate([p.values for p in parts])
    if parts and parts[0].probabilities is not None:
        matrix = np.concatenate([p.probabilities for p in parts if p.probabilities is not None])
        return Predicted(values, matrix, parts[0].classes)
    return Predicted(values)


@dataclass(frozen=True)
class Priced:
    """The catalog version an order pays for."""

    id: int
    name: str
    version: int
    price_per_row: int
    owner_id: int | None


@dataclass
class Order:
    user_id: int
    model: Priced
    model_key: str  # orders with the same key share one predict call
    predictor: Predictor
    features: list[Feature]
    columns: dict[str, np.ndarray[Any, Any]]
    rows: int
    request_id: str | None = None
    api_key_id: int | None = None  # the API key that pays (its limit is checked), None for a login token
    probabilities: bool = False  # also each row's class probabilities (the same price)

    @property
    def cost(self) -> int:
        return self.model.price_per_row * self.rows


def check_price(name: str, version: int, price_per_row: int, max_price_per_row: int | None) -> None:
    """Conflict (409, nothing charged) when the model costs more per row than the caller agreed to pay."""
    if max_price_per_row is not None and price_per_row > max_price_per_row:
        raise Conflict(
            f"model {name!r} version {version} costs {price_per_row} credits per row, more than your "
            f"max_price_per_row of {max_price_per_row}; nothing was charged. Pin the version you expect, or raise "
            "the cap",
            price_per_row=price_per_row,
            max_price_per_row=max_price_per_row,
        )


@dataclass
class Bill:
    task_id: str
    cost: int
    predictions: np.ndarray[Any, Any]
    probabilities: np.ndarray[Any, Any] | None = None  # only for an order that asked for them
    classes: list[Any] | None = None


def serve_and_bill(engine: Engine, orders: list[Order], author_share_percent: int) -> list[Bill | BaseException]:
    """One :class:`Bill` per order, or the error that refused it (that order alone)."""
    return batch_ledger.each_alone_on_failure(
        lambda batch: _serve_and_bill(engine, batch, author_share_percent), orders, "billing"
    )


def _serve_and_bill(engine: Engine, orders: list[Order], share: int) -> list[Bill | BaseException]:
    results: list[Bill | BaseException | None] = [None] * len(orders)
    with engine.connect() as connection, connection.begin():
        # 1. lock and read every account the batch touches
        users = {o.user_id for o in orders} | {o.model.owner_id for o in orders if o.model.owner_id is not None}
        locked = batch_ledger.lock_accounts(connection, users)
        now = utcnow()
        keys = api_keys.KeySpends(connection, {o.api_key_id for o in orders if o.api_key_id is not None}, now)

        # 2. reserve, in arrival order, against the locked balances: nothing else can spend them until commit
        left = dict(locked.balances)
        paid: list[int] = []
        for i, order in enumerate(orders):
            payer = locked.account_of.get(order.user_id)
            if payer is None:
                results[i] = NotFound(f"no account for user {order.user_id}")
            elif left[payer] < order.cost:
                results[i] = InsufficientFunds(need=order.cost, have=left[payer])
            elif (refused := keys.reserve(order.api_key_id, order.cost)) is not None:
                results[i] = refused
            else:
                left[payer] -= order.cost
                paid.append(i)

        # 3. one predict per model, only for what was paid for
        predictions = _predict(orders, paid, results)

        # 4. the tasks, holds and entries of the orders served, and every balance, in one write
        ledger = batch_ledger.BatchLedger(balances=dict(locked.balances))
        tasks: list[dict[str, Any]] = []
        holds: list[dict[str, Any]] = []
        served: list[tuple[int, str]] = []
        for i in paid:
            if i not in predictions:
                keys.release(orders[i].api_key_id, orders[i].cost)
                continue
            order = orders[i]
            task_id = str(uuid.uuid4())
            served.append((i, task_id))
            tasks.append(_task_row(order, task_id, predictions[i], now))
            payer = locked.account_of[order.user_id]
            holds.append(
                {
                    "task_id": task_id,
                    "account_id": payer,
                    "amount": order.cost,
                    "status": HoldStatus.settled.value,
                    "created_at": now,
                    "closed_at": now,
                }
            )
            ledger.move(payer, -order.cost, EntryKind.charge, task_id, f"{order.model.name} v{order.model.version}")
        batch_ledger.pay_out(
            ledger, locked, [(task_id, orders[i].cost, orders[i].model.owner_id) for i, task_id in served], share
        )
        if tasks:
            batch_ledger.write_rows(
                connection,
                [(_tasks, tasks), (_holds, holds), (_entries, ledger.stamped_entries(now))],
                ledger.deltas(),
            )
        keys.write(connection)
    ledger.count()
    for i, task_id in served:
        got = predictions[i]
        results[i] = Bill(task_id, orders[i].cost, got.values, got.probabilities, got.classes)
    return [r if r is not None else ServiceUnavailable("the request was not served; retry it") for r in results]


def _predict(orders: list[Order], paid: list[int], results: list[Bill | BaseException | None]) -> dict[int, Predicted]:
    """Each paid order's predictions, one predict call per model (with the class probabilities if an order of the
    model asked for them, given only to those that asked); a failing model fails its orders alone."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i in paid:
        groups[orders[i].model_key].append(i)
    out: dict[int, Predicted] = {}
    for indexes in groups.values():
        first = orders[indexes[0]]
        if len(indexes) == 1:
            columns, n = first.columns, first.rows
        else:
            columns = {f.name: np.concatenate([orders[i].columns[f.name] for i in indexes]) for f in first.features}
            n = sum(orders[i].rows for i in indexes)
        asked = any(orders[i].probabilities for i in indexes)
        try:
            predicted = predict(first.predictor, columns, n, asked)
            if predicted.values.shape[0] != n:
                raise Unprocessable(f"the model gave {predicted.values.shape[0]} predictions for {n} rows")
        except Exception as exc:
            error = exc if isinstance(exc, AppError) else Unprocessable(f"the model could not predict: {exc}")
            if not isinstance(exc, AppError):
                log.exception("predict failed for %s v%s", first.model.name, first.model.version)
            for i in indexes:
                results[i] = error
            continue
        offset = 0
        for i in indexes:
            stop = offset + orders[i].rows
            values = predicted.values[offset:stop]
            if orders[i].probabilities and predicted.probabilities is not None:
                out[i] = Predicted(values, predicted.probabilities[offset:stop], predicted.classes)
            else:
                out[i] = Predicted(values)
            offset = stop
    return out


def _task_row(order: Order, task_id: str, predicted: Predicted, now: Any) -> dict[str, Any]:
    probabilities = None
    if predicted.probabilities is not None:
        probabilities = tabular.pack_probabilities(predicted.classes or [], predicted.probabilities)
    return {
        "id": task_id,
        "user_id": order.user_id,
        "kind": "infer",
        "model_version_id": order.model.id,
        "status": TaskStatus.succeeded.value,
        "cost": order.cost,
        "rows_accepted": order.rows,
        "rows_rejected": 0,
        "rows_total": order.rows,
        "inputs": tabular.pack_columns(order.columns, order.features),
        "row_numbers": None,
        "outputs": tabular.pack_values(predicted.values),
        "wants_probabilities": True if order.probabilities else None,
        "probability_data": probabilities,
        "errors": [],
        "error": None,
        "attempts": 1,
        "request_id": order.request_id,
        "created_at": now,
        "updated_at": now,
        "started_at": now,
        "finished_at": now,
    }
