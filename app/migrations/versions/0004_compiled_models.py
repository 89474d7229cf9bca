"""Compiled models: the ONNX artifact of a training job and of each catalog version, and the runtime serving it.

Revision ID: 0004_compiled_models
Revises: 0003_training_studio
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_compiled_models"
down_revision = "0003_training_studio"
branch_labels = None
depends_on = None


def _onnx_columns() -> list[sa.Column]:  # type: ignore[type-arg]
    return [
        sa.Column("onnx_md5", sa.String(length=32), nullable=True),
        sa.Column("onnx_size", sa.BigInteger(), nullable=True),
        sa.Column("onnx_path", sa.String(length=255), nullable=True),
        sa.Column("compile_note", sa.String(length=500), nullable=True),
    ]


def upgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("runtime", sa.String(length=16), nullable=False, server_default="sklearn"))
        for column in _onnx_columns():
            batch.add_column(column)
        batch.create_check_constraint("ck_model_versions_runtime", "runtime IN ('onnxruntime', 'sklearn')")
    with op.batch_alter_table("training_jobs") as batch:
        for column in _onnx_columns():
            batch.add_column(column)


def downgrade() -> None:
    with op.batch_alter_table("training_jobs") as batch:
        for name in ("compile_note", "onnx_path", "onnx_size", "onnx_md5"):
            batch.drop_column(name)
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_constraint("ck_model_versions_runtime", type_="check")
        for name in ("compile_note", "onnx_path", "onnx_size", "onnx_md5", "runtime"):
            batch.drop_column(name)
