"""Training recovery: the leases of running jobs, shards and merges, and when a shard was last touched.

Revision ID: 0009_training_leases
Revises: 0008_hardening
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from app.models.base import UTCDateTime

revision = "0009_training_leases"
down_revision = "0008_hardening"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("training_jobs") as batch:
        batch.add_column(sa.Column("lease_owner", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("lease_until", UTCDateTime(), nullable=True))
    with op.batch_alter_table("training_shards") as batch:
        batch.add_column(sa.Column("lease_owner", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("lease_until", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("updated_at", UTCDateTime(), nullable=True))
    shards = sa.table("training_shards", sa.column("created_at", UTCDateTime()), sa.column("updated_at", UTCDateTime()))
    op.get_bind().execute(sa.update(shards).values(updated_at=shards.c.created_at))
    with op.batch_alter_table("training_shards") as batch:
        batch.alter_column("updated_at", existing_type=UTCDateTime(), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("training_shards") as batch:
        batch.drop_column("updated_at")
        batch.drop_column("lease_until")
        batch.drop_column("lease_owner")
    with op.batch_alter_table("training_jobs") as batch:
        batch.drop_column("lease_until")
        batch.drop_column("lease_owner")
