"""Pieces of request handling that several routers share."""

from __future__ import annotations

from typing import Annotated

from fastapi import Header, Query

from app.core.errors import BadRequest

MAX_IDEMPOTENCY_KEY_LENGTH = 200

Limit = Annotated[int, Query(ge=1, le=500, description="How many items to return")]
Offset = Annotated[int, Query(ge=0, le=10_000_000, description="How many items to skip")]
IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="A unique key per intended operation; a retry with the same key and body replays the first result",
    ),
]


def require_idempotency_key(key: str | None) -> str:
    if key is None or not key.strip():
        raise BadRequest("the Idempotency-Key header is required: send a unique value (for example a UUID) per top-up")
    key = key.strip()
    if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise BadRequest(f"the Idempotency-Key header must be at most {MAX_IDEMPOTENCY_KEY_LENGTH} characters")
    return key
