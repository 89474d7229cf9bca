"""Accounts, the append-only ledger and charge holds.

A charge moves credits out of a user's account into a hold tied to a task. The
hold is closed exactly once: refunded to the user, or settled to the model's
author (payout) and the platform (fee).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from pydantic import StrictInt
from sqlmodel import Field, SQLModel

from app.models.base import BigIntId, UTCDateTime, utcnow

PLATFORM_ACCOUNT = "platform"


class EntryKind(StrEnum):
    top_up = "top_up"
    charge = "charge"
    refund = "refund"
    payout = "payout"
    fee = "fee"
    admin_credit = "admin_credit"


# Entries that bring credits into mlmarket from outside.
MINTING_KINDS = (EntryKind.top_up.value, EntryKind.admin_credit.value)


class HoldStatus(StrEnum):
    held = "held"
    refunded = "refunded"
    settled = "settled"


class Account(SQLModel, table=True):
    __tablename__ = "accounts"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64, sa_column_kwargs={"unique": True})
    user_id: int | None = Field(default=None, foreign_key="users.id", unique=True)
    balance: int = Field(default=0, sa_type=sa.BigInteger)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)

    __table_args__ = (sa.CheckConstraint("balance >= 0", name="ck_accounts_balance_nonnegative"),)


class LedgerEntry(SQLModel, table=True):
    __tablename__ = "ledger_entries"

    id: int | None = Field(default=None, sa_column=sa.Column(BigIntId, primary_key=True, autoincrement=True))
    account_id: int = Field(foreign_key="accounts.id", index=True)
    amount: int = Field(sa_type=sa.BigInteger)
    kind: str = Field(max_length=16)
    task_id: str | None = Field(default=None, max_length=64, index=True)
    balance_after: int = Field(sa_type=sa.BigInteger)
    idempotency_key: str = Field(max_length=255, sa_column_kwargs={"unique": True})
    memo: str | None = Field(default=None, max_length=255)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)

    __table_args__ = (
        sa.CheckConstraint(
            "kind IN ('top_up', 'charge', 'refund', 'payout', 'fee', 'admin_credit')",
            name="ck_ledger_entries_kind",
        ),
        sa.CheckConstraint("amount <> 0", name="ck_ledger_entries_amount_nonzero"),
        sa.CheckConstraint("balance_after >= 0", name="ck_ledger_entries_balance_after_nonnegative"),
    )


class ChargeHold(SQLModel, table=True):
    __tablename__ = "charge_holds"

    task_id: str = Field(primary_key=True, max_length=64)
    account_id: int = Field(foreign_key="accounts.id", index=True)
    amount: int = Field(sa_type=sa.BigInteger)
    status: str = Field(default=HoldStatus.held.value, max_length=16, index=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    closed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

    __table_args__ = (
        sa.CheckConstraint("amount > 0", name="ck_charge_holds_amount_positive"),
        sa.CheckConstraint("status IN ('held', 'refunded', 'settled')", name="ck_charge_holds_status"),
    )


class LedgerEntryPublic(SQLModel):
    id: int
    amount: int
    kind: EntryKind
    balance_after: int
    task_id: str | None
    memo: str | None
    created_at: datetime


class WalletPublic(SQLModel):
    balance: int


class TopUpRequest(SQLModel):
    amount: StrictInt = Field(ge=1, description="Whole credits to add, 1 to 1,000,000")


class AdminCreditRequest(SQLModel):
    amount: StrictInt = Field(ge=1, description="Whole credits to add")
    memo: str | None = Field(default=None, max_length=255)


class TopUpResult(SQLModel):
    balance: int
    entry: LedgerEntryPublic


class AccountMismatch(SQLModel):
    account_id: int
    account: str
    balance: int
    entries_sum: int


class LedgerReport(SQLModel):
    ok: bool
    accounts_checked: int
    entries_checked: int
    total_balance: int
    total_minted: int
    total_held: int
    mismatches: list[AccountMismatch]
    running_balance_errors: int
    hold_errors: list[str]
