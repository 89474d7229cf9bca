"""API keys with scopes and monthly spend limits; model version price history (issue: buyers' API).

Revision ID: 0006_api_keys
Revises: 0005_compact_task_data
Create Date: 2026-12-01
"""

from __future__ import annotations

revision = "0006_api_keys"
down_revision = "0005_compact_task_data"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
