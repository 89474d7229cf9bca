"""Heartbeats of a worker process into the database, listed by GET /api/v1/admin/workers."""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import socket
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session

from app.models.base import utcnow
from app.services import workers

log = logging.getLogger("mlmarket.worker")
HEARTBEAT_SECONDS = 5.0


def memory_bytes() -> int:
    """Resident memory of this process (VmRSS), or its peak where /proc is not available."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class Heartbeat:
    """Records the state of ``consumers`` (objects with ``processed`` and, maybe, ``current_task``)."""

    def __init__(self, engine: Engine, queues: list[str], consumers: list[Any]) -> None:
        self.engine = engine
        self.queues = queues
        self.consumers = consumers
        self.name = f"{socket.gethostname()}-{os.getpid()}"
        self.started_at = utcnow()

    def beat(self) -> None:
        current = next((c.current_task for c in self.consumers if getattr(c, "current_task", None)), None)
        with Session(self.engine) as session:
            workers.record(
                session,
                name=self.name,
                queues=self.queues,
                current_task=current,
                tasks_done=sum(int(getattr(c, "processed", 0)) for c in self.consumers),
                memory_bytes=memory_bytes(),
                started_at=self.started_at,
            )

    async def beat_async(self) -> None:
        try:
            await asyncio.to_thread(self.beat)
        except Exception as exc:  # a heartbeat never stops the worker
            log.warning("could not record the heartbeat (%s: %s)", type(exc).__name__, exc)

    async def run(self, interval: float = HEARTBEAT_SECONDS) -> None:
        while True:
            await self.beat_async()
            await asyncio.sleep(interval)


class LeaseKeeper:
    """Renews a lease every third of its length, in a thread, while the work it covers runs (a training step
    holds the GIL-free C code of scikit-learn or waits on the store; the event loop may be busy).

    ``renew`` returns False once the lease is no longer ours (another worker took the work over after our lease
    ran out): ``lost`` then turns true and renewing stops; the guarded completion refuses our result anyway.
    """

    def __init__(self, renew: Callable[[], bool], lease_seconds: float, name: str = "lease") -> None:
        self.renew = renew
        self.interval = max(lease_seconds / 3, 0.05)
        self.name = name
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if not self.renew():
                    self.lost = True
                    log.warning("%s: the lease was taken over by another worker", self.name)
                    return
            except Exception as exc:  # the database may be away for a moment: try again at the next tick
                log.warning("%s: could not renew the lease (%s: %s)", self.name, type(exc).__name__, exc)

    def __enter__(self) -> LeaseKeeper:
        self._thread = threading.Thread(target=self._run, name=f"lease-{self.name}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
