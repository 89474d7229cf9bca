"""Paid tasks (predictions) and the transactional outbox that carries them to the queue."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.models.base import BigIntId, UTCDateTime, utcnow


class TaskStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"


OPEN_STATUSES = (TaskStatus.queued.value, TaskStatus.running.value)
FINISHED_STATUSES = (TaskStatus.succeeded.value, TaskStatus.failed.value)


class Task(SQLModel, table=True):
    __tablename__ = "tasks"

    id: str = Field(primary_key=True, max_length=36)
    user_id: int = Field(foreign_key="users.id")
    kind: str = Field(default="predict", max_length=16)
    model_version_id: int = Field(foreign_key="model_versions.id", index=True)
    status: str = Field(default=TaskStatus.queued.value, max_length=16, index=True)
    cost: int = Field(sa_type=sa.BigInteger)
    rows_accepted: int
    rows_rejected: int = 0
    rows_total: int
    # The accepted rows, one array per feature, and the predictions, one per accepted row (app.services.tabular).
    inputs: bytes = Field(sa_type=sa.LargeBinary)
    outputs: bytes | None = Field(default=None, sa_type=sa.LargeBinary)
    # Class probabilities, only for a task that asked for them (True; None otherwise): the classes in model order
    # and one row of probabilities per accepted row, as compact JSON bytes (app.services.tabular.pack_probabilities).
    wants_probabilities: bool | None = Field(default=None, nullable=True)
    probability_data: bytes | None = Field(default=None, sa_type=sa.LargeBinary)
    # 1-based position in the request of each accepted row, so results line up with what was sent; None when
    # every row was accepted (row k is the k-th accepted one).
    row_numbers: list[int] | None = Field(default=None, sa_type=sa.JSON)
    errors: list[dict[str, Any]] = Field(default_factory=list, sa_type=sa.JSON)
    error: str | None = Field(default=None, max_length=2000)
    attempts: int = 0
    request_id: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

    __table_args__ = (
        sa.Index("ix_tasks_user_id_created_at", "user_id", "created_at"),
        sa.CheckConstraint("status IN ('queued', 'running', 'succeeded', 'failed')", name="ck_tasks_status"),
        sa.CheckConstraint("cost >= 0", name="ck_tasks_cost_nonnegative"),
    )


class OutboxMessage(SQLModel, table=True):
    __tablename__ = "outbox"

    id: int | None = Field(default=None, sa_column=sa.Column(BigIntId, primary_key=True, autoincrement=True))
    task_id: str = Field(max_length=36, index=True)
    queue: str = Field(max_length=64)
    payload: dict[str, Any] = Field(sa_type=sa.JSON)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime, index=True)
    publish_attempts: int = 0
    last_error: str | None = Field(default=None, max_length=500)


class RowErrorPublic(SQLModel):
    row: int
    reason: str


class PredictionRequest(SQLModel):
    model: str = Field(min_length=1, max_length=64)
    version: int | None = Field(default=None, ge=1)
    rows: list[Any] = Field(min_length=1)
    probabilities: bool = Field(
        default=False,
        description="Also give each row's probability per class (classifiers only; the same price)",
    )


class TaskAccepted(SQLModel):
    id: str
    status: TaskStatus
    model: str
    version: int
    cost: int
    rows_accepted: int
    rows_rejected: int
    errors: list[RowErrorPublic]


class TaskPublic(TaskAccepted):
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    results: list[Any] | None = None
    # Only for a task that asked for probabilities: the class labels in model order, and for each entry of
    # ``results`` its probability per class in that order (None where a row was rejected).
    classes: list[Any] | None = None
    probabilities: list[list[float | None] | None] | None = None  # None where the model gave no number
