"""Class probabilities: whether a task asked for them, and the probabilities its worker computed.

Revision ID: 0010_task_probabilities
Revises: 0009_training_leases
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_task_probabilities"
down_revision = "0009_training_leases"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("wants_probabilities", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("probability_data", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("probability_data")
        batch.drop_column("wants_probabilities")
