"""API keys with scopes and monthly spend limits; model version price history (issue: buyers' API).

Revision ID: 0006_api_keys
Revises: 0005_compact_task_data
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from app.models.base import UTCDateTime

revision = "0006_api_keys"
down_revision = "0005_compact_task_data"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False, unique=True),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("monthly_spend_limit", sa.BigInteger(), nullable=True),
        sa.Column("spent", sa.BigInteger(), nullable=False),
        sa.Column("spent_month", sa.String(length=7), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_used_at", UTCDateTime(), nullable=True),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.CheckConstraint("spent >= 0", name="ck_api_keys_spent_not_negative"),
        sa.CheckConstraint(
            "monthly_spend_limit IS NULL OR monthly_spend_limit >= 0", name="ck_api_keys_limit_not_negative"
        ),
    )
    op.create_index("ix_api_keys_user_id", "api_keys", ["user_id"])
    op.create_table(
        "api_key_charges",
        sa.Column("task_id", sa.String(length=36), sa.ForeignKey("tasks.id"), primary_key=True),
        sa.Column("api_key_id", sa.Integer(), sa.ForeignKey("api_keys.id"), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
    )
    op.create_index("ix_api_key_charges_api_key_id", "api_key_charges", ["api_key_id"])


def downgrade() -> None:
    op.drop_index("ix_api_key_charges_api_key_id", table_name="api_key_charges")
    op.drop_table("api_key_charges")
    op.drop_index("ix_api_keys_user_id", table_name="api_keys")
    op.drop_table("api_keys")
