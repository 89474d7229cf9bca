"""Users, accounts, the append-only ledger and charge holds.

Revision ID: 0001_foundation
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from app.models.base import BigIntId, UTCDateTime

revision = "0001_foundation"
down_revision = None
branch_labels = None
depends_on = None

_APPEND_ONLY_MESSAGE = "ledger_entries is append-only"


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("email", sa.String(length=320), nullable=False, unique=True),
        sa.Column("full_name", sa.String(length=200), nullable=True),
        sa.Column("hashed_password", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint("role IN ('client', 'admin')", name="ck_users_role"),
    )
    accounts = op.create_table(
        "accounts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(length=64), nullable=False, unique=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id"), nullable=True, unique=True),
        sa.Column("balance", sa.BigInteger(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint("balance >= 0", name="ck_accounts_balance_nonnegative"),
    )
    op.create_table(
        "ledger_entries",
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column("account_id", sa.Integer(), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("task_id", sa.String(length=64), nullable=True),
        sa.Column("balance_after", sa.BigInteger(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False, unique=True),
        sa.Column("memo", sa.String(length=255), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "kind IN ('top_up', 'charge', 'refund', 'payout', 'fee', 'admin_credit')",
            name="ck_ledger_entries_kind",
        ),
        sa.CheckConstraint("amount <> 0", name="ck_ledger_entries_amount_nonzero"),
        sa.CheckConstraint("balance_after >= 0", name="ck_ledger_entries_balance_after_nonnegative"),
    )
    op.create_index("ix_ledger_entries_account_id", "ledger_entries", ["account_id"])
    op.create_index("ix_ledger_entries_task_id", "ledger_entries", ["task_id"])
    op.create_table(
        "charge_holds",
        sa.Column("task_id", sa.String(length=64), primary_key=True),
        sa.Column("account_id", sa.Integer(), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("closed_at", UTCDateTime(), nullable=True),
        sa.CheckConstraint("amount > 0", name="ck_charge_holds_amount_positive"),
        sa.CheckConstraint("status IN ('held', 'refunded', 'settled')", name="ck_charge_holds_status"),
    )
    op.create_index("ix_charge_holds_account_id", "charge_holds", ["account_id"])
    op.create_index("ix_charge_holds_status", "charge_holds", ["status"])

    op.bulk_insert(accounts, [{"name": "platform", "user_id": None, "balance": 0, "created_at": datetime.now(UTC)}])
    _make_ledger_append_only()


def _make_ledger_append_only() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute(
            f"""
            CREATE FUNCTION ledger_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION '{_APPEND_ONLY_MESSAGE}';
            END;
            $$
            """
        )
        op.execute(
            "CREATE TRIGGER ledger_entries_no_update_or_delete BEFORE UPDATE OR DELETE ON ledger_entries "
            "FOR EACH ROW EXECUTE FUNCTION ledger_entries_append_only()"
        )
    elif dialect == "sqlite":
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER ledger_entries_no_{action.lower()} BEFORE {action} ON ledger_entries "
                f"BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY_MESSAGE}'); END"
            )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS ledger_entries_no_update_or_delete ON ledger_entries")
        op.execute("DROP FUNCTION IF EXISTS ledger_entries_append_only()")
    elif dialect == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS ledger_entries_no_update")
        op.execute("DROP TRIGGER IF EXISTS ledger_entries_no_delete")
    op.drop_table("charge_holds")
    op.drop_table("ledger_entries")
    op.drop_table("accounts")
    op.drop_table("users")
