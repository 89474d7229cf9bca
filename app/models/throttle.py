"""Failed sign-ins, one row each, shared by every API replica through the database (see app.services.throttle)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.models.base import BigIntId, UTCDateTime, utcnow


class LoginFailure(SQLModel, table=True):
    __tablename__ = "login_failures"

    id: int | None = Field(default=None, sa_column=sa.Column(BigIntId, primary_key=True, autoincrement=True))
    # The account as typed (normalised: stripped, lower case) and the client's address.
    account: str = Field(max_length=320)
    address: str = Field(max_length=64)
    failed_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)

    __table_args__ = (sa.Index("ix_login_failures_account_failed_at", "account", "failed_at"),)
