"""The model catalog: one row per published version of a model."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.models.base import UTCDateTime, utcnow

MODEL_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
ONNX_RUNTIME = "onnxruntime"
SKLEARN_RUNTIME = "sklearn"


class ModelTask(StrEnum):
    regression = "regression"
    classification = "classification"


class ModelStatus(StrEnum):
    published = "published"
    unlisted = "unlisted"
    deleted = "deleted"


class ModelVersion(SQLModel, table=True):
    __tablename__ = "model_versions"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64, index=True)
    version: int = Field(ge=1)
    task: str = Field(max_length=16)
    algorithm: str = Field(max_length=64)
    price_per_row: int = Field(ge=1)
    input_schema: list[dict[str, Any]] = Field(sa_type=sa.JSON)
    classes: list[Any] | None = Field(default=None, sa_type=sa.JSON)
    metrics: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)
    description: str = Field(default="", max_length=2000)
    owner_id: int | None = Field(default=None, foreign_key="users.id", index=True)
    artifact_md5: str = Field(max_length=32)
    artifact_size: int = Field(sa_type=sa.BigInteger)
    artifact_path: str = Field(max_length=255)
    status: str = Field(default=ModelStatus.published.value, max_length=16)
    # The compiled ONNX model served by onnxruntime, when the pipeline converted and passed its parity check;
    # otherwise the skops artifact is served by scikit-learn. ``compile_note`` says how it was checked or why not.
    runtime: str = Field(default=SKLEARN_RUNTIME, max_length=16)
    onnx_md5: str | None = Field(default=None, max_length=32)
    onnx_size: int | None = Field(default=None, sa_type=sa.BigInteger)
    onnx_path: str | None = Field(default=None, max_length=255)
    compile_note: str | None = Field(default=None, max_length=500)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)

    __table_args__ = (
        sa.UniqueConstraint("name", "version", name="uq_model_versions_name_version"),
        sa.CheckConstraint("runtime IN ('onnxruntime', 'sklearn')", name="ck_model_versions_runtime"),
        sa.CheckConstraint("price_per_row >= 1", name="ck_model_versions_price_positive"),
        sa.CheckConstraint("version >= 1", name="ck_model_versions_version_positive"),
        sa.CheckConstraint("task IN ('regression', 'classification')", name="ck_model_versions_task"),
        sa.CheckConstraint("status IN ('published', 'unlisted', 'deleted')", name="ck_model_versions_status"),
    )


class FeaturePublic(SQLModel):
    name: str
    type: str
    categories: list[str] | None = None
    # The profile of the training data, for filling in a row (None on versions trained before it was kept):
    # the finite range of a number or integer, and a typical value (the median, or the most frequent string).
    minimum: float | None = None
    maximum: float | None = None
    example: float | int | str | None = None


class ModelVersionPublic(SQLModel):
    name: str
    version: int
    task: ModelTask
    algorithm: str
    price_per_row: int
    input_schema: list[FeaturePublic]
    classes: list[Any] | None
    metrics: dict[str, Any] | None
    description: str
    # Who published it, as the public may see them: their full name (or "author <id>"), never their email.
    owner: str | None
    author_name: str | None = None
    author_id: int | None = None
    status: ModelStatus
    artifact_md5: str
    runtime: str
    compile_note: str | None
    created_at: datetime
    # Price history: the price per row of the version before this one, and whether this one raised it.
    previous_price_per_row: int | None = None
    price_raised: bool = False
    # Succeeded predictions of this model (all its versions), counted at most once a minute: "most used" first.
    predictions: int = 0


class ModelPublic(ModelVersionPublic):
    versions: list[ModelVersionPublic]
