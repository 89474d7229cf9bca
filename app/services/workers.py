"""Worker heartbeats: each worker process records what it consumes, what it is doing and how much memory it uses."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col, select

from app.models.base import utcnow
from app.models.worker import WorkerHeartbeat

_beats: sa.Table = WorkerHeartbeat.__table__  # type: ignore[attr-defined]


def record(
    session: Session,
    *,
    name: str,
    queues: list[str],
    current_task: str | None,
    tasks_done: int,
    memory_bytes: int,
    started_at: datetime,
) -> None:
    values = {
        "queues": queues,
        "current_task": current_task,
        "tasks_done": tasks_done,
        "memory_bytes": memory_bytes,
        "last_seen": utcnow(),
    }
    updated = session.execute(sa.update(_beats).where(_beats.c.name == name).values(**values))
    if updated.rowcount == 0:  # type: ignore[attr-defined]
        session.add(WorkerHeartbeat(name=name, started_at=started_at, **values))  # type: ignore[arg-type]
    session.commit()


def list_workers(session: Session) -> Sequence[WorkerHeartbeat]:
    return session.exec(select(WorkerHeartbeat).order_by(col(WorkerHeartbeat.last_seen).desc())).all()
