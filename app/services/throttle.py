"""Login throttling, shared by every API replica through the database.

Each failed sign-in is one row in ``login_failures``. Two sliding windows count them:

- per (account, client address): ``max_failures`` tries, then 429 until the oldest
  leaves the window. One attacker cannot lock the account for anyone at another
  address.
- per account, from any address: a looser ceiling (``max_account_failures``), so
  an attacker spreading tries over many addresses is slowed as well.

A successful sign-in clears the pair's failures, not the account's. With N
replicas the count is the same for all of them (it lives in PostgreSQL, or in
the embedded SQLite file).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, delete, func, select

from app.core.db import read_session
from app.models.throttle import LoginFailure

# One failed sign-in in this many also deletes every row older than the window (the table stays small).
CLEANUP_ONE_IN = 50
MAX_ACCOUNT_LENGTH = 320
MAX_ADDRESS_LENGTH = 64


def _utcnow() -> datetime:
    return datetime.now(UTC)


def normalise(account: str) -> str:
    return account.strip().lower()[:MAX_ACCOUNT_LENGTH]


class LoginThrottle:
    def __init__(
        self,
        engine: Engine,
        max_failures: int = 10,
        window_seconds: float = 60.0,
        max_account_failures: int = 100,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.engine = engine
        self.max_failures = max_failures
        self.max_account_failures = max(max_account_failures, max_failures)
        self.window = timedelta(seconds=window_seconds)
        self._clock = clock

    def retry_after(self, account: str, address: str) -> int | None:
        """Whole seconds until this account may be tried again from this address, or None when it may now."""
        account, address = normalise(account), address[:MAX_ADDRESS_LENGTH]
        now = self._clock()
        since = now - self.window
        recent = sa.and_(col(LoginFailure.account) == account, col(LoginFailure.failed_at) > since)
        with read_session(self.engine) as session:
            pair = session.exec(
                select(func.count(), func.min(LoginFailure.failed_at)).where(
                    recent, col(LoginFailure.address) == address
                )
            ).one()
            waits = []
            if pair[0] >= self.max_failures:
                waits.append(self._wait(pair[1], now))
            if not waits:
                overall = session.exec(select(func.count(), func.min(LoginFailure.failed_at)).where(recent)).one()
                if overall[0] >= self.max_account_failures:
                    waits.append(self._wait(overall[1], now))
        return max(waits) if waits else None

    def _wait(self, oldest: datetime | None, now: datetime) -> int:
        if oldest is None:  # pragma: no cover - a count above zero has an oldest row
            return 1
        if oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=UTC)
        return max(1, math.ceil((oldest + self.window - now).total_seconds()))

    def record_failure(self, account: str, address: str) -> None:
        now = self._clock()
        with Session(self.engine) as session:
            session.add(LoginFailure(account=normalise(account), address=address[:MAX_ADDRESS_LENGTH], failed_at=now))
            if random.randrange(CLEANUP_ONE_IN) == 0:  # noqa: S311 - not for security, only to spread the cleanup
                session.exec(delete(LoginFailure).where(col(LoginFailure.failed_at) <= now - self.window))
            session.commit()

    def reset(self, account: str, address: str) -> None:
        """A successful sign-in from this address: its failures no longer count (the account's ceiling keeps the
        failures from other addresses)."""
        with Session(self.engine) as session:
            session.exec(
                delete(LoginFailure).where(
                    col(LoginFailure.account) == normalise(account),
                    col(LoginFailure.address) == address[:MAX_ADDRESS_LENGTH],
                )
            )
            session.commit()
