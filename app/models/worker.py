"""The workers that run training and prediction tasks: their last heartbeats."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.models.base import UTCDateTime, utcnow


class WorkerHeartbeat(SQLModel, table=True):
    """The last heartbeat of each worker process."""

    __tablename__ = "worker_heartbeats"

    name: str = Field(primary_key=True, max_length=128)
    queues: list[str] = Field(sa_type=sa.JSON)
    current_task: str | None = Field(default=None, max_length=36)
    tasks_done: int = 0
    memory_bytes: int = Field(default=0, sa_type=sa.BigInteger)
    started_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_seen: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class WorkerPublic(SQLModel):
    name: str
    queues: list[str]
    current_task: str | None
    tasks_done: int
    memory_bytes: int
    started_at: datetime
    last_seen: datetime
