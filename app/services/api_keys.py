"""API keys: create, list, revoke; who a key is; and what it may still spend this month.

A key is a random secret (``mlm_`` and 32 random bytes) shown once; the database keeps its sha256 only. A key
acts for its user with the scopes it was given and within its monthly spend limit.

Revocation takes effect at once: every request that reads the user (the REST routes) reads the key with it, and
every charge locks the key's row in the transaction that charges (:func:`lock`), where a revoked or expired key
is refused and the limit is checked against the spent counter of the current month. The data plane may remember
a key's scopes for a few seconds (they never change), never whether it may still pay.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from app.core import security
from app.core.errors import AppError, Forbidden, NotFound, Unauthorized, Unprocessable
from app.models.api_key import ALL_SCOPES, ApiKey, ApiKeyCharge, ApiKeyCreate, ApiKeyCreated, ApiKeyPublic
from app.models.base import utcnow
from app.models.user import User
from app.services import guarded

MAX_KEYS_PER_USER = 100
# last_used_at is written at most this often per key and process: a key in constant use costs no write per call.
TOUCH_EVERY_SECONDS = 60.0
INVALID_KEY = "invalid, expired or revoked API key"

_keys: sa.Table = ApiKey.__table__  # type: ignore[attr-defined]
_charges: sa.Table = ApiKeyCharge.__table__  # type: ignore[attr-defined]


class SpendLimitReached(AppError):
    status_code = 402

    def __init__(self, limit: int, spent: int, cost: int) -> None:
        super().__init__(
            f"this API key's monthly spend limit of {limit} credits would be passed: {spent} spent this month, "
            f"this call costs {cost}",
            limit=limit,
            spent=spent,
            cost=cost,
        )


def month_of(moment: datetime) -> str:
    """The calendar month (UTC) a spend belongs to, ``YYYY-MM``."""
    return moment.astimezone(UTC).strftime("%Y-%m")


def spent_this_month(key: ApiKey, now: datetime | None = None) -> int:
    return key.spent if key.spent_month == month_of(now or utcnow()) else 0


# -- managing keys -------------------------------------------------------------------------------------------


def create(session: Session, *, user_id: int, body: ApiKeyCreate) -> ApiKeyCreated:
    now = utcnow()
    if body.expires_at is not None and _aware(body.expires_at) <= now:
        raise Unprocessable("expires_at must be in the future")
    count = session.exec(
        select(sa.func.count()).select_from(ApiKey).where(ApiKey.user_id == user_id, col(ApiKey.revoked_at).is_(None))
    ).one()
    if count >= MAX_KEYS_PER_USER:
        raise Unprocessable(f"at most {MAX_KEYS_PER_USER} API keys per user; revoke one first")
    secret = security.new_api_key()
    scopes = ALL_SCOPES if body.scopes is None else [s for s in ALL_SCOPES if s in {v.value for v in body.scopes}]
    if not scopes:
        raise Unprocessable(f"a key needs at least one scope of {', '.join(ALL_SCOPES)}")
    key = ApiKey(
        user_id=user_id,
        name=body.name.strip() or "key",
        prefix=secret[: security.API_KEY_SHOWN_CHARS],
        key_hash=security.hash_api_key(secret),
        scopes=scopes,
        monthly_spend_limit=body.monthly_spend_limit,
        created_at=now,
        expires_at=_aware(body.expires_at) if body.expires_at is not None else None,
    )
    session.add(key)
    session.commit()
    return ApiKeyCreated.model_validate(to_public(key, now), update={"key": secret})


def list_for_user(session: Session, *, user_id: int) -> Sequence[ApiKey]:
    """The user's keys that are not revoked, newest first."""
    return session.exec(
        select(ApiKey)
        .where(ApiKey.user_id == user_id, col(ApiKey.revoked_at).is_(None))
        .order_by(col(ApiKey.created_at).desc(), col(ApiKey.id).desc())
    ).all()


def revoke(session: Session, *, user_id: int, key_id: int) -> None:
    """Revokes the user's key at once; another user's key, an unknown or an already revoked one is NotFound."""
    live_and_own = [_keys.c.user_id == user_id, _keys.c.revoked_at.is_(None)]
    if not guarded.change_status(session, _keys, key_id, {"revoked_at": utcnow()}, guards=live_and_own):
        raise NotFound(f"API key {key_id} not found")
    session.commit()


def to_public(key: ApiKey, now: datetime | None = None) -> ApiKeyPublic:
    return ApiKeyPublic(
        id=key.id or 0,
        prefix=key.prefix,
        name=key.name,
        scopes=list(key.scopes),
        monthly_spend_limit=key.monthly_spend_limit,
        spent_this_month=spent_this_month(key, now),
        created_at=key.created_at,
        last_used_at=key.last_used_at,
        expires_at=key.expires_at,
    )


# -- who a key is --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyIdentity:
    id: int
    user_id: int
    scopes: frozenset[str]
    expires_at: datetime | None


def identify(session: Session, secret: str) -> KeyIdentity:
    """The live key behind ``secret`` whose user is active; Unauthorized otherwise."""
    if not security.looks_like_api_key(secret):
        raise Unauthorized(INVALID_KEY)
    digest = security.hash_api_key(secret)
    row = session.exec(
        select(ApiKey, User.is_active).join(User, col(User.id) == ApiKey.user_id).where(ApiKey.key_hash == digest)
    ).first()
    if row is None:
        raise Unauthorized(INVALID_KEY)
    key, active = row
    if not security.api_key_matches(secret, key.key_hash) or not active or not is_live(key):
        raise Unauthorized(INVALID_KEY)
    return KeyIdentity(id=key.id or 0, user_id=key.user_id, scopes=frozenset(key.scopes), expires_at=key.expires_at)


def is_live(key: ApiKey, now: datetime | None = None) -> bool:
    return key.revoked_at is None and (key.expires_at is None or _aware(key.expires_at) > (now or utcnow()))


def check_live(session: Session, key_id: int) -> None:
    """Unauthorized unless the key is still live (a remembered key may have been revoked since)."""
    key = session.get(ApiKey, key_id)
    if key is None or not is_live(key):
        raise Unauthorized(INVALID_KEY)


def require_scope(scopes: frozenset[str] | None, scope: str | None, what: str) -> None:
    """Forbidden unless the caller may do ``what``: a login token (``scopes`` None) may do everything; an API key
    needs ``scope``, and a ``scope`` of None is refused to every key (managing keys, wallets, administration)."""
    if scopes is None:
        return
    if scope is None:
        raise Forbidden(f"API keys cannot {what}; sign in with your password (POST /api/v1/auth/token)")
    if scope not in scopes:
        raise Forbidden(f"this API key lacks the '{scope}' scope needed to {what}")


class Toucher:
    """Writes a key's ``last_used_at`` at most once every TOUCH_EVERY_SECONDS per process."""

    def __init__(self) -> None:
        self._last: dict[int, float] = {}
        self._lock = threading.Lock()

    def due(self, key_id: int) -> bool:
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(key_id, -TOUCH_EVERY_SECONDS) < TOUCH_EVERY_SECONDS:
                return False
            if len(self._last) > 100_000:
                self._last.clear()
            self._last[key_id] = now
            return True

    def touch(self, engine: sa.Engine, key_id: int) -> None:
        """Records a use (blocking: call it in a thread); skipped when this process did it a moment ago."""
        if not self.due(key_id):
            return
        now = utcnow()
        with engine.begin() as connection:
            connection.execute(
                sa.update(_keys)
                .where(
                    _keys.c.id == key_id,
                    sa.or_(_keys.c.last_used_at.is_(None), _keys.c.last_used_at < now - timedelta(seconds=30)),
                )
                .values(last_used_at=now)
            )


TOUCHER = Toucher()


# -- what a key may spend: checked and counted in the transaction that charges ------------------------------


@dataclass
class _Locked:
    limit: int | None
    spent: int
    live: bool
    changed: bool = False


class KeySpends:
    """The api_keys rows of one charging transaction, locked: each reservation is checked against the key's
    limit and counted in its spent total of this month; :meth:`write` stores the totals before the commit."""

    def __init__(self, connection: sa.Connection, key_ids: set[int], now: datetime) -> None:
        self.now = now
        self.month = month_of(now)
        self.rows: dict[int, _Locked] = {}
        if not key_ids:
            return
        # in id order, after the accounts (every charging transaction locks accounts first, then keys)
        for row in connection.execute(
            sa.select(
                _keys.c.id,
                _keys.c.monthly_spend_limit,
                _keys.c.spent,
                _keys.c.spent_month,
                _keys.c.revoked_at,
                _keys.c.expires_at,
            )
            .where(_keys.c.id.in_(sorted(key_ids)))
            .order_by(_keys.c.id)
            .with_for_update()
        ):
            expires = row.expires_at
            live = row.revoked_at is None and (expires is None or _aware(expires) > now)
            spent = int(row.spent) if row.spent_month == self.month else 0
            limit = None if row.monthly_spend_limit is None else int(row.monthly_spend_limit)
            self.rows[row.id] = _Locked(limit=limit, spent=spent, live=live, changed=row.spent_month != self.month)

    def reserve(self, key_id: int | None, cost: int) -> AppError | None:
        """None when the key may pay ``cost`` (now counted), else the error that refuses this call alone."""
        if key_id is None:
            return None
        row = self.rows.get(key_id)
        if row is None or not row.live:
            return Unauthorized(INVALID_KEY)
        if row.limit is not None and row.spent + cost > row.limit:
            return SpendLimitReached(limit=row.limit, spent=row.spent, cost=cost)
        row.spent += cost
        row.changed = True
        return None

    def release(self, key_id: int | None, cost: int) -> None:
        """Gives back a reservation whose call was not served after all."""
        if key_id is not None and key_id in self.rows:
            self.rows[key_id].spent -= cost

    def write(self, connection: sa.Connection) -> None:
        changed = [(key_id, row) for key_id, row in self.rows.items() if row.changed]
        if not changed:
            return
        connection.execute(
            sa.update(_keys)
            .where(_keys.c.id == sa.bindparam("key_id"))
            .values(spent=sa.bindparam("new_spent"), spent_month=self.month, last_used_at=self.now),
            [{"key_id": key_id, "new_spent": row.spent} for key_id, row in changed],
        )


def charge_rows(task_key_costs: list[tuple[str, int, int]], month: str) -> list[dict[str, object]]:
    """api_key_charges rows of (task id, key id, cost): what each key gets back if its task is refunded."""
    return [{"task_id": t, "api_key_id": k, "amount": c, "month": month} for t, k, c in task_key_costs]


CHARGES_TABLE = _charges


def give_back(session: Session, *, task_id: str) -> None:
    """After a task's refund: its key's spent total of that month goes down by what the task cost (in the
    refund's transaction; accounts were locked first, then this key, as when charging)."""
    charge = session.get(ApiKeyCharge, task_id)
    if charge is None:
        return
    session.execute(
        sa.update(_keys)
        .where(_keys.c.id == charge.api_key_id, _keys.c.spent_month == charge.month, _keys.c.spent >= charge.amount)
        .values(spent=_keys.c.spent - charge.amount)
    )


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
