"""Hardening: failed sign-ins in the database, so every API replica throttles from the same count.

Revision ID: 0008_hardening
Revises: 0007_webhooks
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from app.models.base import BigIntId, UTCDateTime

revision = "0008_hardening"
down_revision = "0007_webhooks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "login_failures",
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column("account", sa.String(length=320), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("failed_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_login_failures_failed_at", "login_failures", ["failed_at"])
    op.create_index("ix_login_failures_account_failed_at", "login_failures", ["account", "failed_at"])


def downgrade() -> None:
    op.drop_index("ix_login_failures_account_failed_at", table_name="login_failures")
    op.drop_index("ix_login_failures_failed_at", table_name="login_failures")
    op.drop_table("login_failures")
