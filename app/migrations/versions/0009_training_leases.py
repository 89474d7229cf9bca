"""Training recovery: merge leases, delivery counts and sweep of stale jobs.

Revision ID: 0009_training_leases
Revises: 0008_hardening
Create Date: 2026-12-01
"""

from __future__ import annotations

revision = "0009_training_leases"
down_revision = "0008_hardening"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
