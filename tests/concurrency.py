"""The concurrency harness of the billing checks: many HTTP clients hammering a live server at once, their
answers tallied, then the ledger verified by `mlmarket ledger verify` as an operator would run it.

Every test that checks money under concurrent requests uses it, so they all check the same way.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Generic, TypeVar

import httpx

from tests.conftest import TEST_SECRET

REPO = Path(__file__).resolve().parents[1]
K = TypeVar("K", bound=Hashable)


class Tally(Generic[K]):
    """Outcomes counted by many threads at once, with the texts of the answers worth reading afterwards."""

    def __init__(self) -> None:
        self.counts: Counter[K] = Counter()
        self.details: list[str] = []
        self._lock = threading.Lock()

    def add(self, key: K, detail: str | None = None) -> None:
        with self._lock:
            self.counts[key] += 1
            if detail is not None:
                self.details.append(detail)


def hammer(base_url: str, clients: int, call: Callable[[int, httpx.Client], None]) -> None:
    """Runs ``call(k, http)`` for k in 0..clients-1, each on a thread and an HTTP connection of its own, all at
    once; returns when every one is done and re-raises the first failure (an assertion in a client fails the test).
    """

    def client(k: int) -> None:
        with httpx.Client(base_url=base_url, timeout=60) as http:
            call(k, http)

    with ThreadPoolExecutor(max_workers=clients) as pool:
        for future in [pool.submit(client, k) for k in range(clients)]:
            future.result()


def assert_ledger_verifies(database_url: str, data_dir: Path) -> None:
    """`mlmarket ledger verify --json`, run in a process of its own on the database, finds the ledger sound."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLMARKET_")}
    env.update(MLMARKET_DATABASE_URL=database_url, MLMARKET_DATA_DIR=str(data_dir), MLMARKET_SECRET_KEY=TEST_SECRET)
    verify = subprocess.run(
        [sys.executable, "-m", "app.cli", "ledger", "verify", "--json"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verify.returncode == 0 and '"ok": true' in verify.stdout, verify.stdout + verify.stderr
