"""Uploaded datasets: each a name and a target over versions of the data, stored content-addressed."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.models.base import UTCDateTime, utcnow


class Dataset(SQLModel, table=True):
    __tablename__ = "datasets"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", index=True)
    name: str = Field(max_length=255)
    target: str = Field(max_length=200)
    current_version: int = 1
    deleted_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class DatasetVersion(SQLModel, table=True):
    __tablename__ = "dataset_versions"

    id: int | None = Field(default=None, primary_key=True)
    dataset_id: int = Field(foreign_key="datasets.id", index=True)
    version: int
    rows: int
    columns: list[str] = Field(sa_type=sa.JSON)
    dtypes: dict[str, str] = Field(sa_type=sa.JSON)
    task: str = Field(max_length=16)
    artifact_md5: str = Field(max_length=32)
    artifact_size: int = Field(sa_type=sa.BigInteger)
    artifact_path: str = Field(max_length=255)
    note: str = Field(default="", max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)

    __table_args__ = (sa.UniqueConstraint("dataset_id", "version", name="uq_dataset_versions_dataset_version"),)


class DatasetVersionPublic(SQLModel):
    version: int
    rows: int
    columns: list[str]
    dtypes: dict[str, str]
    task: str
    artifact_md5: str
    note: str
    created_at: datetime


class DatasetPublic(SQLModel):
    id: int
    name: str
    target: str
    version: int
    rows: int
    columns: list[str]
    dtypes: dict[str, str]
    task: str
    artifact_md5: str
    deleted: bool
    created_at: datetime
    updated_at: datetime


class DatasetInfo(DatasetPublic):
    column_summary: list[dict[str, Any]]
    target_summary: dict[str, Any]
    versions: list[DatasetVersionPublic]


class DatasetRows(SQLModel):
    dataset_id: int
    version: int
    total: int
    offset: int
    limit: int
    rows: list[dict[str, Any]]


class AppendRowsRequest(SQLModel):
    rows: list[Any] = Field(min_length=1)
