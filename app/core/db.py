"""Engine and session construction for SQLite (embedded) and PostgreSQL (psycopg 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session, create_engine

from app.core.config import Settings


def make_engine(settings: Settings, *, pre_ping: bool = True) -> Engine:
    """The engine. ``pre_ping=False`` skips the liveness round trip on each checkout: for callers that retry a
    transaction whose connection turns out dead (SQLAlchemy then drops the pool's stale connections)."""
    url = settings.sqlalchemy_url
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=settings.db_pool_size,
            max_overflow=20,
            hide_parameters=True,
        )
        _configure_sqlite(engine)
        return engine
    return create_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=20,
        pool_pre_ping=pre_ping,
        pool_recycle=1800,
        # A database error's message never carries the statement's values (emails, password hashes, tokens).
        hide_parameters=True,
    )


READ_ONLY_OPTION = "mlmarket_read_only"


def _configure_sqlite(engine: Engine) -> None:
    """WAL, foreign keys, and BEGIN IMMEDIATE for every transaction that may write.

    A writing transaction takes the write lock up front, so two writers queue on
    the busy timeout instead of failing with "database is locked" when a read
    turns into a write. Sessions made by :func:`read_session` begin deferred: in
    WAL mode they read a snapshot and never wait for (or block) a writer.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # let SQLAlchemy emit BEGIN itself
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_ONLY_OPTION) else "BEGIN IMMEDIATE")


def read_session(engine: Engine) -> Session:
    """A session for reads only. On SQLite it takes no write lock; elsewhere it is an ordinary session."""
    return Session(engine.execution_options(**{READ_ONLY_OPTION: True}), expire_on_commit=False)
