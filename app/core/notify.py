"""Change notices between processes: PostgreSQL LISTEN/NOTIFY, and a generation counter per process.

A writer calls :func:`notify` inside its transaction; PostgreSQL delivers the
notice to every listening connection when (and only if) the transaction commits.
:class:`Listener` holds one such connection in a thread of the API process and
bumps a :class:`Generation` for each notice, so in-memory views (the catalog)
know they are stale. On SQLite there is one process and the in-process bump
after commit is enough.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable
from types import TracebackType

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

log = logging.getLogger("mlmarket.notify")

CATALOG_CHANNEL = "mlmarket_catalog"
OUTBOX_CHANNEL = "mlmarket_outbox"
TASKS_CHANNEL = "mlmarket_tasks"
# Said to every watcher when notices may have been missed (the listening connection was down).
ANY_CHANGE = "changed"
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


class Watch:
    """The change notices of one key, in the event loop that watches it; see :class:`Watchers`."""

    def __init__(self, hub: Watchers, key: str) -> None:
        self.hub = hub
        self.key = key
        self.loop = asyncio.get_running_loop()
        self.events: asyncio.Queue[str] = asyncio.Queue()

    async def next(self, timeout: float) -> str | None:
        """The next notice (an event name), or None when ``timeout`` seconds pass without one."""
        try:
            return await asyncio.wait_for(self.events.get(), timeout=max(timeout, 0.0))
        except TimeoutError:
            return None

    def close(self) -> None:
        self.hub.forget(self)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class Watchers:
    """Who waits for which key (a task id), woken from any thread: by a commit in this process or by a NOTIFY
    from another one. A watch is registered before the state it guards is read, so no notice falls between."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watches: dict[str, list[Watch]] = {}

    def watch(self, key: str) -> Watch:
        watch = Watch(self, key)
        with self._lock:
            self._watches.setdefault(key, []).append(watch)
        return watch

    def forget(self, watch: Watch) -> None:
        with self._lock:
            watches = self._watches.get(watch.key)
            if watches is not None and watch in watches:
                watches.remove(watch)
                if not watches:
                    del self._watches[watch.key]

    def tell(self, keys: Iterable[str] | None, event: str) -> None:
        """Tells the watchers of ``keys`` (of every key: None) that ``event`` happened."""
        with self._lock:
            if keys is None:
                targets = [w for watches in self._watches.values() for w in watches]
            else:
                targets = [w for key in keys for w in self._watches.get(key, ())]
        for watch in targets:
            watch.loop.call_soon_threadsafe(watch.events.put_nowait, event)

    def on_notice(self, payload: str | None) -> None:
        """A NOTIFY payload ``event:id,id,…``; None (notices may have been missed) tells every watcher."""
        if payload is None:
            self.tell(None, ANY_CHANGE)
            return
        event, _, ids = payload.partition(":")
        self.tell(ids.split(","), event)


class Listener:
    """A thread that LISTENs on PostgreSQL channels and calls each channel's callback with each notice's payload.

    While the connection is down nothing can be heard, so every callback is called with None on each reconnect:
    a view that might have missed a notice is dropped rather than trusted, a waiter looks again.
    """

    def __init__(self, engine: Engine, callbacks: dict[str, Callable[[str | None], None]]) -> None:
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
                                callback(notice.payload)
            except Exception as exc:
                log.warning("change notices interrupted (%s: %s); reconnecting", type(exc).__name__, exc)
                self._all()
                self._stop.wait(RECONNECT_SECONDS)

    def _all(self) -> None:
        for callback in self.callbacks.values():
            callback(None)
