"""The training studio: training jobs and their shards."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.models.base import UTCDateTime, utcnow

JOB_STATUSES = "status IN ('queued', 'running', 'succeeded', 'failed')"


class TrainingJob(SQLModel, table=True):
    """One training run. Its id is also the ledger task id of its charge."""

    __tablename__ = "training_jobs"

    id: str = Field(primary_key=True, max_length=36)
    user_id: int = Field(foreign_key="users.id")
    dataset_id: int | None = Field(default=None, foreign_key="datasets.id", index=True)
    dataset_version: int
    retrain_of: str | None = Field(default=None, max_length=36)
    algorithm: str = Field(max_length=64)
    task: str = Field(max_length=16)
    target: str = Field(max_length=200)
    hyperparameters: dict[str, Any] = Field(sa_type=sa.JSON)
    test_size: float
    random_state: int
    shards: int = 1
    rows: int
    cost: int = Field(sa_type=sa.BigInteger)
    status: str = Field(default="queued", max_length=16, index=True)
    progress: int = 0
    stage: str = Field(default="queued", max_length=64)
    metrics: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)
    report: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)
    features: list[dict[str, Any]] | None = Field(default=None, sa_type=sa.JSON)
    artifact_md5: str | None = Field(default=None, max_length=32)
    artifact_size: int | None = Field(default=None, sa_type=sa.BigInteger)
    artifact_path: str | None = Field(default=None, max_length=255)
    onnx_md5: str | None = Field(default=None, max_length=32)
    onnx_size: int | None = Field(default=None, sa_type=sa.BigInteger)
    onnx_path: str | None = Field(default=None, max_length=255)
    compile_note: str | None = Field(default=None, max_length=500)
    error: str | None = Field(default=None, max_length=2000)
    attempts: int = 0
    duration_seconds: float | None = None
    # The worker running the job (or, for a sharded job, merging its shards) and until when it holds it: it renews
    # the lease while it works; once the lease has run out, another worker may take the job over.
    lease_owner: str | None = Field(default=None, max_length=128)
    lease_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    deleted_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

    __table_args__ = (
        sa.Index("ix_training_jobs_user_id_created_at", "user_id", "created_at"),
        sa.CheckConstraint(JOB_STATUSES, name="ck_training_jobs_status"),
        sa.CheckConstraint("cost >= 0", name="ck_training_jobs_cost_nonnegative"),
        sa.CheckConstraint("shards >= 1", name="ck_training_jobs_shards_positive"),
    )


class TrainingShard(SQLModel, table=True):
    """One part of a sharded job, trained by whichever worker takes its message."""

    __tablename__ = "training_shards"

    id: str = Field(primary_key=True, max_length=36)
    job_id: str = Field(foreign_key="training_jobs.id", index=True, max_length=36)
    index: int
    rows: int = 0
    status: str = Field(default="queued", max_length=16)
    worker: str | None = Field(default=None, max_length=128)
    artifact_md5: str | None = Field(default=None, max_length=32)
    artifact_size: int | None = Field(default=None, sa_type=sa.BigInteger)
    artifact_path: str | None = Field(default=None, max_length=255)
    error: str | None = Field(default=None, max_length=2000)
    attempts: int = 0
    duration_seconds: float | None = None
    # As on the job: the worker training the shard holds it until lease_until, renewed while it trains.
    lease_owner: str | None = Field(default=None, max_length=128)
    lease_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

    __table_args__ = (
        sa.UniqueConstraint("job_id", "index", name="uq_training_shards_job_index"),
        sa.CheckConstraint(JOB_STATUSES, name="ck_training_shards_status"),
    )


class AlgorithmPublic(SQLModel):
    name: str
    task: str
    description: str
    shardable: bool
    hyperparameters: dict[str, Any]
    # What training costs: this many credits per started 1,000 rows of the dataset (at least one block).
    price_per_1000_rows: int = 0


class TrainingJobCreate(SQLModel):
    dataset_id: int = Field(ge=1, le=2**31 - 1)
    algorithm: str = Field(min_length=1, max_length=64)
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    target: str | None = Field(default=None, min_length=1, max_length=200)
    test_size: float = Field(default=0.2, gt=0.0, le=0.5)
    random_state: int = Field(default=42, ge=0, le=2**31 - 1)
    shards: int = Field(default=1, ge=1, le=8)


class RetrainRequest(SQLModel):
    dataset_id: int | None = Field(default=None, ge=1, le=2**31 - 1)
    hyperparameters: dict[str, Any] | None = None


class TrainingShardPublic(SQLModel):
    index: int
    rows: int
    status: str
    worker: str | None
    error: str | None
    attempts: int
    duration_seconds: float | None


class TrainingJobPublic(SQLModel):
    id: str
    dataset_id: int | None
    dataset_version: int
    retrain_of: str | None
    algorithm: str
    task: str
    target: str
    hyperparameters: dict[str, Any]
    test_size: float
    random_state: int
    shards: int
    rows: int
    cost: int
    status: str
    progress: int
    stage: str
    metrics: dict[str, Any] | None
    error: str | None
    attempts: int
    duration_seconds: float | None
    artifact_md5: str | None
    deleted: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    shard_status: list[TrainingShardPublic] = Field(default_factory=list)


class TrainingReport(SQLModel):
    job_id: str
    algorithm: str
    task: str
    target: str
    dataset_id: int | None
    dataset_version: int
    hyperparameters: dict[str, Any]
    metrics: dict[str, Any]
    features: list[dict[str, Any]]
    classes: list[Any] | None
    confusion_matrix: list[list[int]] | None
    feature_importance: dict[str, Any]
    rows: dict[str, int]
    durations: dict[str, float]


class PublishRequest(SQLModel):
    training_job_id: str = Field(min_length=1, max_length=36)
    name: str = Field(min_length=1, max_length=64, regex=r"^[a-z0-9][a-z0-9-]{0,62}$")
    description: str = Field(default="", max_length=2000)
    price_per_row: int = Field(ge=1, le=1_000_000)
