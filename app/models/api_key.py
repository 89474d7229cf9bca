"""API keys: long-lived, revocable bearer secrets for programs, with scopes and a monthly spend limit."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.models.base import UTCDateTime, utcnow


class Scope(StrEnum):
    predict = "predict"  # paid predictions: POST /api/v1/predictions, /v2 and gRPC infer
    read = "read"  # reading: tasks, results, wallet, datasets, training jobs
    train = "train"  # datasets and training jobs
    publish = "publish"  # publishing and unpublishing models


ALL_SCOPES = [s.value for s in Scope]


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_keys"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", index=True)
    name: str = Field(max_length=100)
    # The first characters of the secret, shown in listings so that a person can tell their keys apart.
    prefix: str = Field(max_length=16)
    # sha256 of the whole secret (hex); the secret itself is shown once and never stored.
    key_hash: str = Field(max_length=64, sa_column_kwargs={"unique": True})
    scopes: list[str] = Field(sa_type=sa.JSON)
    monthly_spend_limit: int | None = Field(default=None, sa_type=sa.BigInteger)
    # Credits charged through this key in ``spent_month`` (``YYYY-MM``, UTC); a new month starts from zero.
    spent: int = Field(default=0, sa_type=sa.BigInteger)
    spent_month: str | None = Field(default=None, max_length=7)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

    __table_args__ = (
        sa.CheckConstraint("spent >= 0", name="ck_api_keys_spent_not_negative"),
        sa.CheckConstraint(
            "monthly_spend_limit IS NULL OR monthly_spend_limit >= 0", name="ck_api_keys_limit_not_negative"
        ),
    )


class ApiKeyCharge(SQLModel, table=True):
    """Which key paid for a queued task, and how much in which month: what the key gets back if it is refunded."""

    __tablename__ = "api_key_charges"

    task_id: str = Field(primary_key=True, max_length=36, foreign_key="tasks.id")
    api_key_id: int = Field(foreign_key="api_keys.id", index=True)
    amount: int = Field(sa_type=sa.BigInteger)
    month: str = Field(max_length=7)


class ApiKeyCreate(SQLModel):
    name: str = Field(min_length=1, max_length=100)
    scopes: list[Scope] | None = Field(default=None, description="Default: all of predict, read, train, publish")
    monthly_spend_limit: int | None = Field(default=None, ge=0, le=2**53, description="Credits per calendar month")
    expires_at: datetime | None = None


class ApiKeyPublic(SQLModel):
    id: int
    prefix: str
    name: str
    scopes: list[str]
    monthly_spend_limit: int | None
    spent_this_month: int
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None


class ApiKeyCreated(ApiKeyPublic):
    key: str = Field(description="The secret: shown this once, send it as 'Authorization: Bearer <key>'")
