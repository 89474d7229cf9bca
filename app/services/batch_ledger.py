"""The batched ledger: what every batch that moves money writes with, in one transaction and set-based SQL.

Lock the accounts a batch touches in id order (:func:`lock_accounts`), move credits in memory with running
balances (:class:`BatchLedger`, :func:`pay_out`), then write every row and balance in statements whose
number and text do not depend on the batch size (:func:`write_rows`). Should the database refuse a batch,
each item is tried alone (:func:`each_alone_on_failure`) so that only the one at fault fails.
Used by synchronous serving (app.services.billing), submitting (app.services.submissions) and settling
(app.services.task_runs).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
import sqlalchemy as sa
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

from app.core.errors import AppError, BadRequest, NotFound, ServiceUnavailable
from app.models.ledger import PLATFORM_ACCOUNT, Account, EntryKind
from app.services.ledger import LEDGER_CREDITS, LEDGER_ENTRIES, split

log = logging.getLogger("mlmarket.billing")
Item = TypeVar("Item")
Outcome = TypeVar("Outcome")

_accounts: sa.Table = Account.__table__  # type: ignore[attr-defined]


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
