"""Signed webhooks: each user's signing secret, the webhook a task asked for, its events and every delivery attempt."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.models.base import BigIntId, UTCDateTime, utcnow


class WebhookEventType(StrEnum):
    started = "started"
    completed = "completed"


class WebhookEventStatus(StrEnum):
    pending = "pending"
    delivered = "delivered"
    failed = "failed"


class WebhookSecret(SQLModel, table=True):
    """A user's signing secret (``whsec_<base64>``); the previous one still signs for a while after a rotation."""

    __tablename__ = "webhook_secrets"

    user_id: int = Field(primary_key=True, foreign_key="users.id")
    secret: str = Field(max_length=100)
    previous_secret: str | None = Field(default=None, max_length=100)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    rotated_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class WebhookSubscription(SQLModel, table=True):
    """The webhook a prediction or a training job carries, written in the transaction that creates it."""

    __tablename__ = "webhook_subscriptions"

    task_id: str = Field(primary_key=True, max_length=36)
    kind: str = Field(max_length=16)
    user_id: int = Field(foreign_key="users.id")
    url: str = Field(max_length=2048)
    on_started: bool = False
    on_completed: bool = True
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class WebhookEvent(SQLModel, table=True):
    """One message to deliver: its id is the ``webhook-id`` header, the same on every attempt. The body is fixed at
    the first attempt, so a retry sends the same bytes."""

    __tablename__ = "webhook_events"

    id: str = Field(primary_key=True, max_length=64)
    task_id: str = Field(max_length=36, index=True)
    kind: str = Field(max_length=16)
    user_id: int = Field(foreign_key="users.id")
    event: str = Field(max_length=16)
    url: str = Field(max_length=2048)
    status: str = Field(default=WebhookEventStatus.pending.value, max_length=16)
    attempts: int = 0
    body: bytes | None = Field(default=None, sa_type=sa.LargeBinary)
    last_error: str | None = Field(default=None, max_length=500)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

    __table_args__ = (
        sa.CheckConstraint("status IN ('pending', 'delivered', 'failed')", name="ck_webhook_events_status"),
    )


class WebhookDelivery(SQLModel, table=True):
    """One attempt to deliver an event: the receiver's status code, or why there was none."""

    __tablename__ = "webhook_deliveries"

    id: int | None = Field(default=None, sa_column=sa.Column(BigIntId, primary_key=True, autoincrement=True))
    event_id: str = Field(foreign_key="webhook_events.id", max_length=64, index=True)
    task_id: str = Field(max_length=36, index=True)
    attempt: int
    status_code: int | None = None
    error: str | None = Field(default=None, max_length=500)
    duration_ms: int
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class WebhookRequest(SQLModel):
    """The webhook fields a prediction or a training job request may carry."""

    webhook: str | None = Field(default=None, min_length=1, max_length=2048)
    webhook_events: list[WebhookEventType] | None = Field(default=None, min_length=1, max_length=2)


class WebhookSecretPublic(SQLModel):
    secret: str
    created_at: datetime
    rotated_at: datetime | None


class WebhookDeliveryPublic(SQLModel):
    event_id: str
    event: str
    url: str
    attempt: int
    status_code: int | None
    error: str | None
    delivered: bool
    duration_ms: int
    created_at: datetime
