"""The money rules of mlmarket: integer credits, an append-only ledger, exactly-once refunds and settlements.

Every movement is a conditional update of one account row plus one ledger entry
with a unique idempotency key, inside the caller's transaction. ``top_up`` and
``admin_credit`` commit on their own; ``charge``, ``refund`` and ``settle`` leave
the commit to the caller so that a task row and its outbox row commit with them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from prometheus_client import Counter
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from app.core.errors import InsufficientFunds, NotFound, Unprocessable
from app.core.oncommit import on_commit
from app.models.base import utcnow
from app.models.ledger import (
    MINTING_KINDS,
    PLATFORM_ACCOUNT,
    Account,
    AccountMismatch,
    ChargeHold,
    EntryKind,
    HoldStatus,
    LedgerEntry,
    LedgerReport,
)

# Counted once the entry's transaction has committed (app.core.oncommit): a rolled-back entry counts nothing.
LEDGER_ENTRIES = Counter("mlmarket_ledger_entries_total", "Ledger entries written, by kind", ["kind"])
LEDGER_CREDITS = Counter("mlmarket_ledger_credits_total", "Credits moved by ledger entries, by kind", ["kind"])
for _kind in EntryKind:
    LEDGER_ENTRIES.labels(_kind.value)
    LEDGER_CREDITS.labels(_kind.value)

_accounts: sa.Table = Account.__table__  # type: ignore[attr-defined]
_entries: sa.Table = LedgerEntry.__table__  # type: ignore[attr-defined]
_holds: sa.Table = ChargeHold.__table__  # type: ignore[attr-defined]

MAX_REPORTED_PROBLEMS = 100


@dataclass(frozen=True)
class Credited:
    entry: LedgerEntry
    replayed: bool

    @property
    def balance(self) -> int:
        return self.entry.balance_after


def user_account(session: Session, user_id: int) -> Account:
    account = session.exec(select(Account).where(Account.user_id == user_id)).first()
    if account is None:
        raise NotFound(f"no account for user {user_id}")
    return account


def platform_account_id(session: Session) -> int:
    account_id = session.exec(select(Account.id).where(Account.name == PLATFORM_ACCOUNT)).first()
    if account_id is None:
        raise NotFound("the platform account is missing; run `mlmarket migrate`")
    return account_id


def balance_of(session: Session, user_id: int) -> int:
    return user_account(session, user_id).balance


def _move(
    session: Session,
    *,
    account_id: int,
    amount: int,
    kind: EntryKind,
    key: str,
    task_id: str | None = None,
    memo: str | None = None,
) -> LedgerEntry:
    """Apply a signed amount to one account and append its ledger entry.

    A debit is conditional (``balance >= cost``) so no balance ever goes below
    zero, whatever runs concurrently; the row lock it takes also orders the
    entries of one account, which keeps ``balance_after`` a true running sum.
    """
    stmt = sa.update(_accounts).where(_accounts.c.id == account_id)
    if amount < 0:
        stmt = stmt.where(_accounts.c.balance >= -amount)
    new_balance = session.execute(
        stmt.values(balance=_accounts.c.balance + amount).returning(_accounts.c.balance)
    ).scalar_one_or_none()
    if new_balance is None:
        have = session.execute(sa.select(_accounts.c.balance).where(_accounts.c.id == account_id)).scalar_one_or_none()
        if have is None:
            raise NotFound(f"account {account_id} not found")
        raise InsufficientFunds(need=-amount, have=have)
    entry = LedgerEntry(
        account_id=account_id,
        amount=amount,
        kind=kind.value,
        task_id=task_id,
        balance_after=new_balance,
        idempotency_key=key,
        memo=memo,
    )
    session.add(entry)
    session.flush()
    on_commit(session, lambda: _count(kind, amount))
    return entry


def _count(kind: EntryKind, amount: int) -> None:
    LEDGER_ENTRIES.labels(kind.value).inc()
    LEDGER_CREDITS.labels(kind.value).inc(abs(amount))


def _credit_once(
    session: Session, *, user_id: int, amount: int, kind: EntryKind, client_key: str, memo: str | None
) -> Credited:
    """Credit a user's account once per client key; a retry with the same key replays the first entry."""
    if amount <= 0:
        raise Unprocessable("amount must be a positive whole number of credits")
    account = user_account(session, user_id)
    key = f"{kind.value}:{account.id}:{client_key}"

    def replay() -> Credited | None:
        first = session.exec(select(LedgerEntry).where(LedgerEntry.idempotency_key == key)).first()
        if first is None:
            return None
        if first.amount != amount:
            raise Unprocessable(
                f"Idempotency-Key {client_key!r} was already used for a request with amount {first.amount}; "
                "use a new key for a new request"
            )
        return Credited(entry=first, replayed=True)

    earlier = replay()
    if earlier is not None:
        session.rollback()
        return earlier
    try:
        entry = _move(session, account_id=account.id or 0, amount=amount, kind=kind, key=key, memo=memo)
        session.commit()
    except IntegrityError:
        # A concurrent request with the same key committed first: nothing of ours was kept.
        session.rollback()
        earlier = replay()
        if earlier is None:
            raise
        return earlier
    return Credited(entry=entry, replayed=False)


def top_up(session: Session, *, user_id: int, amount: int, idempotency_key: str) -> Credited:
    return _credit_once(
        session, user_id=user_id, amount=amount, kind=EntryKind.top_up, client_key=idempotency_key, memo="top-up"
    )


def admin_credit(
    session: Session, *, user_id: int, amount: int, idempotency_key: str, memo: str | None = None
) -> Credited:
    return _credit_once(
        session,
        user_id=user_id,
        amount=amount,
        kind=EntryKind.admin_credit,
        client_key=idempotency_key,
        memo=memo or "admin credit",
    )


def charge(session: Session, *, user_id: int, amount: int, task_id: str, memo: str | None = None) -> LedgerEntry:
    """Debit ``amount`` for a task and hold it until the task is refunded or settled. The caller commits."""
    if amount <= 0:
        raise Unprocessable("a charge must be a positive whole number of credits")
    account = user_account(session, user_id)
    entry = _move(
        session,
        account_id=account.id or 0,
        amount=-amount,
        kind=EntryKind.charge,
        key=f"charge:{task_id}",
        task_id=task_id,
        memo=memo,
    )
    session.add(ChargeHold(task_id=task_id, account_id=account.id or 0, amount=amount))
    session.flush()
    return entry


def _close_hold(session: Session, task_id: str, status: HoldStatus) -> Any:
    """Close an open hold. Returns its row, or None when it was closed before (so the caller does nothing)."""
    row = session.execute(
        sa.update(_holds)
        .where(_holds.c.task_id == task_id, _holds.c.status == HoldStatus.held.value)
        .values(status=status.value, closed_at=utcnow())
        .returning(_holds.c.account_id, _holds.c.amount)
    ).first()
    if row is None and session.get(ChargeHold, task_id) is None:
        raise NotFound(f"no charge for task {task_id}")
    return row


def refund(session: Session, *, task_id: str, memo: str | None = None) -> bool:
    """Return a task's charge to its payer. True if refunded now, False if it was already refunded or settled."""
    hold = _close_hold(session, task_id, HoldStatus.refunded)
    if hold is None:
        return False
    _move(
        session,
        account_id=hold.account_id,
        amount=hold.amount,
        kind=EntryKind.refund,
        key=f"refund:{task_id}",
        task_id=task_id,
        memo=memo,
    )
    return True


def split(amount: int, author_share_percent: int) -> tuple[int, int]:
    """(author's payout, platform fee): integer credits, the remainder of the division to the platform."""
    payout = amount * author_share_percent // 100
    return payout, amount - payout


def settle(session: Session, *, task_id: str, author_user_id: int | None, author_share_percent: int) -> bool:
    """Pay a succeeded task's charge to the model's author and the platform. False if already closed."""
    hold = _close_hold(session, task_id, HoldStatus.settled)
    if hold is None:
        return False
    payout, fee = split(hold.amount, author_share_percent if author_user_id is not None else 0)
    if payout and author_user_id is not None:
        _move(
            session,
            account_id=user_account(session, author_user_id).id or 0,
            amount=payout,
            kind=EntryKind.payout,
            key=f"payout:{task_id}",
            task_id=task_id,
        )
    if fee:
        _move(
            session,
            account_id=platform_account_id(session),
            amount=fee,
            kind=EntryKind.fee,
            key=f"fee:{task_id}",
            task_id=task_id,
        )
    return True


def list_entries(session: Session, *, user_id: int, limit: int, offset: int) -> Sequence[LedgerEntry]:
    account = user_account(session, user_id)
    return session.exec(
        select(LedgerEntry)
        .where(LedgerEntry.account_id == account.id)
        .order_by(col(LedgerEntry.id).desc())
        .limit(limit)
        .offset(offset)
    ).all()


def verify(session: Session) -> LedgerReport:
    """Check the whole ledger: balances, running sums, conservation of credits and every charge hold."""
    per_account = session.execute(
        sa.select(
            _accounts.c.id,
            _accounts.c.name,
            _accounts.c.balance,
            sa.func.coalesce(sa.func.sum(_entries.c.amount), 0),
        )
        .select_from(_accounts.outerjoin(_entries, _entries.c.account_id == _accounts.c.id))
        .group_by(_accounts.c.id, _accounts.c.name, _accounts.c.balance)
    ).all()
    mismatches = [
        AccountMismatch(account_id=aid, account=name, balance=balance, entries_sum=int(total))
        for aid, name, balance, total in per_account
        if balance != total
    ]
    total_balance = sum(int(row[2]) for row in per_account)

    running = (
        sa.select(
            _entries.c.balance_after,
            sa.func.sum(_entries.c.amount)
            .over(partition_by=_entries.c.account_id, order_by=_entries.c.id, rows=(None, 0))
            .label("running"),
        )
    ).subquery()
    running_errors = session.execute(
        sa.select(sa.func.count()).select_from(running).where(running.c.running != running.c.balance_after)
    ).scalar_one()

    entries_checked = session.execute(sa.select(sa.func.count()).select_from(_entries)).scalar_one()
    minted = session.execute(
        sa.select(sa.func.coalesce(sa.func.sum(_entries.c.amount), 0)).where(_entries.c.kind.in_(MINTING_KINDS))
    ).scalar_one()
    held = session.execute(
        sa.select(sa.func.coalesce(sa.func.sum(_holds.c.amount), 0)).where(_holds.c.status == HoldStatus.held.value)
    ).scalar_one()

    hold_errors = _hold_problems(session)
    if int(minted) != total_balance + int(held):
        hold_errors.insert(0, f"credits not conserved: minted {minted} != balances {total_balance} + held {held}")
    return LedgerReport(
        ok=not mismatches and running_errors == 0 and not hold_errors,
        accounts_checked=len(per_account),
        entries_checked=int(entries_checked),
        total_balance=total_balance,
        total_minted=int(minted),
        total_held=int(held),
        mismatches=mismatches,
        running_balance_errors=int(running_errors),
        hold_errors=hold_errors[:MAX_REPORTED_PROBLEMS],
    )


def _hold_problems(session: Session) -> list[str]:
    def count_of(kind: str) -> Any:
        return sa.func.sum(sa.case((_entries.c.kind == kind, 1), else_=0))

    def sum_of(*kinds: str) -> Any:
        return sa.func.sum(sa.case((_entries.c.kind.in_(kinds), _entries.c.amount), else_=0))

    rows = session.execute(
        sa.select(
            _holds.c.task_id,
            _holds.c.amount,
            _holds.c.status,
            sa.func.coalesce(count_of(EntryKind.charge.value), 0),
            sa.func.coalesce(-sum_of(EntryKind.charge.value), 0),
            sa.func.coalesce(count_of(EntryKind.refund.value), 0),
            sa.func.coalesce(sum_of(EntryKind.refund.value), 0),
            sa.func.coalesce(sum_of(EntryKind.payout.value, EntryKind.fee.value), 0),
        )
        .select_from(_holds.outerjoin(_entries, _entries.c.task_id == _holds.c.task_id))
        .group_by(_holds.c.task_id, _holds.c.amount, _holds.c.status)
    ).all()
    problems: list[str] = []
    for task_id, amount, status, charges, charged, refunds, refunded, settled in rows:
        if charges != 1 or charged != amount:
            problems.append(f"task {task_id}: {charges} charge entries for {charged}, hold is {amount}")
        expected_refund = amount if status == HoldStatus.refunded.value else 0
        expected_settle = amount if status == HoldStatus.settled.value else 0
        if refunds > 1 or refunded != expected_refund or settled != expected_settle:
            problems.append(
                f"task {task_id} ({status}): refunded {refunded} in {refunds} entries, settled {settled}, hold {amount}"
            )
    orphans = session.execute(
        sa.select(sa.distinct(_entries.c.task_id))
        .where(_entries.c.task_id.is_not(None))
        .where(~sa.exists().where(_holds.c.task_id == _entries.c.task_id))
        .limit(MAX_REPORTED_PROBLEMS)
    ).scalars()
    problems.extend(f"task {task_id}: ledger entries without a charge hold" for task_id in orphans)
    return problems
