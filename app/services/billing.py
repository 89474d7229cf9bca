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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np
import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

from app.core.errors import (
    AppError,
    BadRequest,
    Conflict,
    InsufficientFunds,
    NotFound,
    ServiceUnavailable,
    Unprocessable,
)
from app.models.base import utcnow
from app.models.ledger import PLATFORM_ACCOUNT, Account, ChargeHold, EntryKind, HoldStatus, LedgerEntry
from app.models.task import Task, TaskStatus
from app.runtime.schema import Feature
from app.services import api_keys, tabular
from app.services.ledger import LEDGER_CREDITS, LEDGER_ENTRIES, split

log = logging.getLogger("mlmarket.billing")
Item = TypeVar("Item")
Outcome = TypeVar("Outcome")

_accounts: sa.Table = Account.__table__  # type: ignore[attr-defined]
_entries: sa.Table = LedgerEntry.__table__  # type: ignore[attr-defined]
_holds: sa.Table = ChargeHold.__table__  # type: ignore[attr-defined]
_tasks: sa.Table = Task.__table__  # type: ignore[attr-defined]


class Predictor(Protocol):
    def predict_columns(self, columns: dict[str, np.ndarray[Any, Any]], n: int) -> np.ndarray[Any, Any]: ...


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


def serve_and_bill(engine: Engine, orders: list[Order], author_share_percent: int) -> list[Bill | BaseException]:
    """One :class:`Bill` per order, or the error that refused it (that order alone)."""
    return each_alone_on_failure(lambda batch: _serve_and_bill(engine, batch, author_share_percent), orders, "billing")


def each_alone_on_failure(
    write: Callable[[list[Item]], list[Outcome | BaseException]], items: list[Item], what: str
) -> list[Outcome | BaseException]:
    """``write(items)`` as one transaction; should the database refuse it, each item alone, so that only the
    one at fault fails (with a 4xx for bad data, a 503 for an unavailable database).

    A connection found dead (the database restarted, or closed it) is replaced and the batch tried once more:
    nothing of a failed transaction was kept.
    """
    try:
        try:
            return write(items)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            return write(items)
    except DBAPIError as exc:
        if len(items) == 1:
            return [database_error(exc)]
        log.warning("%s a batch of %d failed (%s); %s each alone", what, len(items), type(exc).__name__, what)
    out: list[Outcome | BaseException] = []
    for item in items:
        try:
            out.extend(write([item]))
        except DBAPIError as exc:
            out.append(database_error(exc))
    return out


def database_error(exc: DBAPIError) -> AppError:
    if isinstance(exc, DataError | IntegrityError):
        return BadRequest("the request could not be stored; check its id and values")
    return ServiceUnavailable("the database is unavailable right now; retry the request")


@dataclass
class BatchLedger:
    """Balances of the locked accounts and the entries of this batch, with their running balances."""

    balances: dict[int, int]
    entries: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))

    def __post_init__(self) -> None:
        self.start = dict(self.balances)

    def move(self, account_id: int, amount: int, kind: EntryKind, task_id: str, memo: str | None) -> None:
        self.balances[account_id] += amount
        self.entries.append(
            {
                "account_id": account_id,
                "amount": amount,
                "kind": kind.value,
                "task_id": task_id,
                "balance_after": self.balances[account_id],
                "idempotency_key": f"{kind.value}:{task_id}",
                "memo": memo,
            }
        )
        self.counts[kind.value].append(abs(amount))

    def deltas(self) -> dict[int, int]:
        return {a: self.balances[a] - self.start[a] for a in self.start if self.balances[a] != self.start[a]}

    def stamped_entries(self, now: Any) -> list[dict[str, Any]]:
        return [{**e, "created_at": now} for e in self.entries]

    def count(self) -> None:
        """Counts the entries in /metrics (after the commit: a rolled-back batch counts nothing)."""
        for entry_kind, amounts in self.counts.items():
            LEDGER_ENTRIES.labels(entry_kind).inc(len(amounts))
            LEDGER_CREDITS.labels(entry_kind).inc(sum(amounts))


@dataclass(frozen=True)
class Locked:
    """The accounts a batch touches, locked: user id → account id, the platform's account, their balances."""

    account_of: dict[int, int]
    platform: int | None
    balances: dict[int, int]


def lock_accounts(connection: sa.Connection, user_ids: set[int], *, platform: bool = True) -> Locked:
    """Locks the accounts of ``user_ids`` (and the platform's, unless ``platform`` is false: a batch that only
    charges payers does not queue behind the settling of others) in id order, the same order everywhere (no
    deadlock between batches), with one ``SELECT … FOR UPDATE``."""
    which: sa.ColumnElement[bool] = _accounts.c.user_id.in_(sorted(user_ids))
    if platform:
        which = sa.or_(which, _accounts.c.name == PLATFORM_ACCOUNT)
    locked = connection.execute(
        sa.select(_accounts.c.id, _accounts.c.user_id, _accounts.c.name, _accounts.c.balance)
        .where(which)
        .order_by(_accounts.c.id)
        .with_for_update()
    ).all()
    platform_id = next((row.id for row in locked if row.user_id is None and row.name == PLATFORM_ACCOUNT), None)
    if platform and platform_id is None:
        raise NotFound("the platform account is missing; run `mlmarket migrate`")
    return Locked(
        account_of={row.user_id: row.id for row in locked if row.user_id is not None},
        platform=platform_id,
        balances={row.id: int(row.balance) for row in locked},
    )


def pay_out(ledger: BatchLedger, locked: Locked, settled: list[tuple[str, int, int | None]], share: int) -> None:
    """The author's payout and the platform's fee of each settled (task id, amount, author's user id): every
    payout first, then the fees, as app.services.ledger.settle orders them."""
    fees: list[tuple[int, str]] = []
    for task_id, amount, author in settled:
        owner = locked.account_of.get(author) if author is not None else None
        payout, fee = split(amount, share if owner is not None else 0)
        if payout and owner is not None:
            ledger.move(owner, payout, EntryKind.payout, task_id, None)
        if fee:
            fees.append((fee, task_id))
    if fees and locked.platform is None:
        raise NotFound("the platform account was not locked for this batch")
    for fee, task_id in fees:
        ledger.move(locked.platform or 0, fee, EntryKind.fee, task_id, None)


def _serve_and_bill(engine: Engine, orders: list[Order], share: int) -> list[Bill | BaseException]:
    results: list[Bill | BaseException | None] = [None] * len(orders)
    with engine.connect() as connection, connection.begin():
        # 1. lock and read every account the batch touches
        users = {o.user_id for o in orders} | {o.model.owner_id for o in orders if o.model.owner_id is not None}
        locked = lock_accounts(connection, users)
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
        ledger = BatchLedger(balances=dict(locked.balances))
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
        pay_out(ledger, locked, [(task_id, orders[i].cost, orders[i].model.owner_id) for i, task_id in served], share)
        if tasks:
            write_rows(
                connection,
                [(_tasks, tasks), (_holds, holds), (_entries, ledger.stamped_entries(now))],
                ledger.deltas(),
            )
        keys.write(connection)
    ledger.count()
    for i, task_id in served:
        results[i] = Bill(task_id=task_id, cost=orders[i].cost, predictions=predictions[i])
    return [r if r is not None else ServiceUnavailable("the request was not served; retry it") for r in results]


_WRITE_SQL: dict[tuple[Any, ...], str] = {}


def write_rows(
    connection: sa.Connection,
    inserts: list[tuple[sa.Table, list[dict[str, Any]]]],
    deltas: dict[int, int],
    notify: tuple[str, str] | None = None,
) -> None:
    """Inserts rows into several tables and moves balances, with statements whose text does not depend on the
    batch size; ``notify`` is a (channel, payload) NOTIFY sent when the transaction commits (PostgreSQL).

    PostgreSQL: one statement: ``INSERT … SELECT FROM unnest(…)`` per table (one array per column) in
    data-modifying CTEs, and the balance ``UPDATE … FROM unnest(…)``: one round trip, parsed once per process.
    Rows keep their order (``WITH ORDINALITY``), so each account's running ``balance_after`` follows the entry
    ids. SQLite: one ``executemany`` per table and one ``UPDATE`` per account.
    """
    inserts = [(table, rows) for table, rows in inserts if rows]
    if connection.dialect.name != "postgresql":
        for table, rows in inserts:
            connection.execute(sa.insert(table), rows)
        for account_id, delta in deltas.items():
            connection.execute(
                sa.update(_accounts).where(_accounts.c.id == account_id).values(balance=_accounts.c.balance + delta)
            )
        return
    key = (tuple((table.name, tuple(rows[0])) for table, rows in inserts), notify is not None)
    sql = _WRITE_SQL.get(key)
    if sql is None:
        parts = []
        for n, (table, rows) in enumerate(inserts):
            names = list(rows[0])
            casts = ", ".join(f"%b::{table.c[c].type.compile(dialect=connection.dialect)}[]" for c in names)
            columns = ", ".join(names)
            parts.append(
                f"i{n} AS (INSERT INTO {table.name} ({columns}) "  # noqa: S608 - names from the table definitions
                f"SELECT {columns} FROM unnest({casts}) WITH ORDINALITY AS u({columns}, position) "
                "ORDER BY position)"
            )
        if notify is not None:
            parts.append("n AS (SELECT pg_notify(%b::text, %b::text))")
        parts.append(
            "b AS (UPDATE accounts SET balance = accounts.balance + d.delta "
            "FROM unnest(%b::INTEGER[], %b::BIGINT[]) AS d(id, delta) WHERE accounts.id = d.id)"
        )
        # the NOTIFY's CTE must be read to run; the others run because they modify data
        sql = f"WITH {', '.join(parts)} SELECT {'(SELECT count(*) FROM n)' if notify else '1'}"  # noqa: S608
        _WRITE_SQL[key] = sql
    params: list[Any] = []
    for table, rows in inserts:
        for name in rows[0]:
            values = [row[name] for row in rows]
            if isinstance(table.c[name].type, sa.JSON):
                values = [None if v is None else orjson.dumps(v).decode() for v in values]
            params.append(values)
    if notify is not None:
        params.extend(notify)
    params.extend([list(deltas), list(deltas.values())])
    connection.exec_driver_sql(sql, tuple(params))


def _predict(
    orders: list[Order], paid: list[int], results: list[Bill | BaseException | None]
) -> dict[int, np.ndarray[Any, Any]]:
    """Each paid order's predictions, one predict call per model; a failing model fails its orders alone."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i in paid:
        groups[orders[i].model_key].append(i)
    out: dict[int, np.ndarray[Any, Any]] = {}
    for indexes in groups.values():
        first = orders[indexes[0]]
        if len(indexes) == 1:
            columns, n = first.columns, first.rows
        else:
            columns = {f.name: np.concatenate([orders[i].columns[f.name] for i in indexes]) for f in first.features}
            n = sum(orders[i].rows for i in indexes)
        try:
            predicted = np.asarray(first.predictor.predict_columns(columns, n))
            if predicted.shape[0] != n:
                raise Unprocessable(f"the model gave {predicted.shape[0]} predictions for {n} rows")
        except Exception as exc:
            error = exc if isinstance(exc, AppError) else Unprocessable(f"the model could not predict: {exc}")
            if not isinstance(exc, AppError):
                log.exception("predict failed for %s v%s", first.model.name, first.model.version)
            for i in indexes:
                results[i] = error
            continue
        offset = 0
        for i in indexes:
            out[i] = predicted[offset : offset + orders[i].rows]
            offset += orders[i].rows
    return out


def _task_row(order: Order, task_id: str, predictions: np.ndarray[Any, Any], now: Any) -> dict[str, Any]:
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
        "outputs": tabular.pack_values(predictions),
        "errors": [],
        "error": None,
        "attempts": 1,
        "request_id": order.request_id,
        "created_at": now,
        "updated_at": now,
        "started_at": now,
        "finished_at": now,
    }
