"""Change notices between processes: PostgreSQL LISTEN/NOTIFY, and a generation counter per process.

A writer calls :func:`notify` inside its transaction; PostgreSQL delivers the
notice to every listening connection when (and only if) the transaction commits.
:class:`Listener` holds one such connection in a thread of the API process and
bumps a :class:`Generation` for each notice, so in-memory views (the catalog)
know they are stale. On SQLite there is one process and the in-process bump
after commit is enough.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

log = logging.getLogger("mlmarket.notify")

CATALOG_CHANNEL = "mlmarket_catalog"
RECONNECT_SECONDS = 1.0


class Generation:
    """A counter that only goes up; a cached view remembers the value it was built at."""

    def __init__(self) -> None:
        self._value = 0
        self._lock = threading.Lock()

    @property
    def value(self) -> int:
        return self._value

    def bump(self) -> None:
        with self._lock:
            self._value += 1


def notify(session: Session, channel: str, on_commit: Callable[[], None]) -> None:
    """After this session commits: ``on_commit()`` here, and a NOTIFY on ``channel`` to other processes."""
    event.listen(session, "after_commit", lambda _s: on_commit(), once=True)
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text("SELECT pg_notify(:channel, '')"), {"channel": channel})


class Listener:
    """A thread that LISTENs on PostgreSQL channels and calls each channel's callbacks per notice.

    While the connection is down nothing can be heard, so every callback is called on each reconnect: a view
    that might have missed a notice is dropped rather than trusted.
    """

    def __init__(self, engine: Engine, callbacks: dict[str, Callable[[], None]]) -> None:
        self.url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.callbacks = callbacks
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="pg-listener", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=3)

    def _run(self) -> None:
        import psycopg

        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
                    for channel in self.callbacks:
                        conn.execute(sa.text(f'LISTEN "{channel}"').text)  # channel names are constants
                    self._all()
                    while not self._stop.is_set():
                        for notice in conn.notifies(timeout=0.5):
                            callback = self.callbacks.get(notice.channel)
                            if callback is not None:
                                callback()
            except Exception as exc:
                log.warning("change notices interrupted (%s: %s); reconnecting", type(exc).__name__, exc)
                self._all()
                self._stop.wait(RECONNECT_SECONDS)

    def _all(self) -> None:
        for callback in self.callbacks.values():
            callback()
