from __future__ import annotations

from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from pydantic import EmailStr
from sqlmodel import Field, SQLModel

from app.models.base import UTCDateTime, utcnow


class Role(StrEnum):
    client = "client"
    admin = "admin"


class UserBase(SQLModel):
    email: str = Field(max_length=320)
    full_name: str | None = Field(default=None, max_length=200)


class User(UserBase, table=True):
    __tablename__ = "users"

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=320, sa_column_kwargs={"unique": True}, nullable=False)
    hashed_password: str = Field(max_length=255)
    role: str = Field(default=Role.client.value, max_length=16)
    is_active: bool = Field(default=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)

    __table_args__ = (sa.CheckConstraint("role IN ('client', 'admin')", name="ck_users_role"),)


class UserCreate(SQLModel):
    email: EmailStr = Field(max_length=320)
    password: str = Field(min_length=8, max_length=128)
    full_name: str | None = Field(default=None, max_length=200)


class UserPublic(SQLModel):
    id: int
    email: str
    full_name: str | None
    role: Role


class UserAdminPublic(UserPublic):
    is_active: bool
    created_at: datetime
    balance: int


class Token(SQLModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - OAuth2 token type
    expires_in: int
