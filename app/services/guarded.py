"""Guarded row changes: a status change that only one caller can win, and soft delete / restore.

The check and the change are one conditional ``UPDATE … WHERE status …``: of concurrent callers (a redelivered
message, two workers, a sweep), exactly one changes the row, and each learns from the row count whether it did.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar, cast

import sqlalchemy as sa
from sqlmodel import Session

from app.models.base import utcnow


def changed(
    db: Session | sa.Connection,
    table: sa.Table,
    key: Any,
    values: Mapping[str, Any],
    *,
    statuses: str | Collection[str] = (),
    guards: Sequence[sa.ColumnElement[bool]] = (),
) -> bool:
    """Updates row ``key`` of ``table`` with ``values`` only while its status is ``statuses`` (one status, or any of
    several; any status when empty) and every one of ``guards`` holds. True when the row changed."""
    where = [table.c.id == key]
    if isinstance(statuses, str):
        where.append(table.c.status == statuses)
    elif statuses:
        where.append(table.c.status.in_(statuses))
    result = cast(sa.CursorResult[Any], db.execute(sa.update(table).where(*where, *guards).values(**values)))
    return result.rowcount == 1


def change_status(
    session: Session,
    table: sa.Table,
    key: Any,
    values: Mapping[str, Any],
    *,
    statuses: str | Collection[str] = (),
    guards: Sequence[sa.ColumnElement[bool]] = (),
) -> bool:
    """:func:`changed`, rolling the session's transaction back when the row did not change (another caller moved it
    on first), so nothing else the caller did in that transaction is kept."""
    if changed(session, table, key, values, statuses=statuses, guards=guards):
        return True
    session.rollback()
    return False


class SoftDeletable(Protocol):
    deleted_at: datetime | None


Row = TypeVar("Row", bound=SoftDeletable)


def soft_delete(session: Session, row: Row) -> Row:
    """Hides the row (it can be restored); a row deleted before keeps its first deletion time."""
    if row.deleted_at is None:
        row.deleted_at = utcnow()
        session.add(row)
        session.commit()
    return row


def restore(session: Session, row: Row) -> Row:
    row.deleted_at = None
    session.add(row)
    session.commit()
    return row
