"""Hardening: login throttle shared by replicas, atomic publishing of a name.

Revision ID: 0008_hardening
Revises: 0007_webhooks
Create Date: 2026-12-01
"""

from __future__ import annotations

revision = "0008_hardening"
down_revision = "0007_webhooks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
