"""Webhook signing secrets and signatures, as the Standard Webhooks specification says.

``webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`` with the base64 key after ``whsec_``;
after a rotation the previous secret signs too (a second signature) for ROTATION_GRACE.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta

from app.models.base import utcnow
from app.models.webhook import WebhookSecret

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format of a secret, not one
# After a rotation the previous secret signs too (a second signature) for this long, so receivers can switch over.
ROTATION_GRACE = timedelta(hours=24)


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def signing_secrets(row: WebhookSecret, now: datetime | None = None) -> list[str]:
    """The secrets a message is signed with now: the current one, and the previous one during its grace."""
    now = now or utcnow()
    keys = [row.secret]
    if row.previous_secret and row.rotated_at is not None and now - row.rotated_at < ROTATION_GRACE:
        keys.append(row.previous_secret)
    return keys


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256>`` of ``{id}.{timestamp}.{body}`` with the base64 key after ``whsec_``."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(keys: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signature(k, msg_id, timestamp, body) for k in keys),
    }
