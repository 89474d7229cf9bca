"""Login throttling: a sliding window of failed sign-ins per account and client address.

The window lives in the memory of one API process, so with N replicas an
attacker gets at most N times the limit; a shared store (Redis, the database)
would be needed to make it exact across replicas.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

# Beyond this many tracked (account, address) pairs the oldest quiet ones are dropped, so memory stays bounded.
MAX_TRACKED_PAIRS = 100_000


class LoginThrottle:
    def __init__(
        self, max_failures: int = 10, window_seconds: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_failures = max_failures
        self.window_seconds = window_seconds
        self._clock = clock
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        failures = self._failures.get(key, deque())
        while failures and failures[0] <= now - self.window_seconds:
            failures.popleft()
        return failures

    def retry_after(self, account: str, address: str) -> int | None:
        """Whole seconds until this account may be tried again from this address, or None when it may now."""
        key = (account.strip().lower(), address)
        now = self._clock()
        with self._lock:
            failures = self._recent(key, now)
            if len(failures) < self.max_failures:
                return None
            return max(1, math.ceil(failures[0] + self.window_seconds - now))

    def record_failure(self, account: str, address: str) -> None:
        key = (account.strip().lower(), address)
        now = self._clock()
        with self._lock:
            failures = self._recent(key, now)
            failures.append(now)
            self._failures[key] = failures
            if len(self._failures) > MAX_TRACKED_PAIRS:
                self._forget_quiet(now)

    def reset(self, account: str, address: str) -> None:
        with self._lock:
            self._failures.pop((account.strip().lower(), address), None)

    def _forget_quiet(self, now: float) -> None:
        for key in [k for k, v in self._failures.items() if not v or v[-1] <= now - self.window_seconds]:
            del self._failures[key]
