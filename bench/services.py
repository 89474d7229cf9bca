"""Real services for the benchmark: a PostgreSQL database and a RabbitMQ virtual host made for one run."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator

import psycopg
import sqlalchemy as sa

POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
RABBITMQ_HOST = "127.0.0.1"
RABBITMQ_PORT = 5672
RABBITMQ_USER = "guest"
RABBITMQ_PASSWORD = "guest"  # noqa: S105 - RabbitMQ's default local-only user


def unavailable_reason() -> str | None:
    """Why the real services cannot be used, or None when PostgreSQL and RabbitMQ both answer."""
    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {exc}"
    if shutil.which("rabbitmqctl") is None:
        return "rabbitmqctl is not installed"
    try:
        with socket.create_connection((RABBITMQ_HOST, RABBITMQ_PORT), timeout=3):
            pass
    except OSError as exc:
        return f"RabbitMQ is not reachable at {RABBITMQ_HOST}:{RABBITMQ_PORT}: {exc}"
    return None


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh database (URL for psycopg), dropped afterwards."""
    name = f"mlmarket_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield sa.engine.make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)  # noqa: S603, S607


@contextlib.contextmanager
def rabbitmq_vhost() -> Iterator[str]:
    """A virtual host of its own (AMQP URL), deleted afterwards with everything in it."""
    vhost = f"mlmarket-bench-{uuid.uuid4().hex[:10]}"
    _rabbitmqctl("add_vhost", vhost)
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, RABBITMQ_USER, ".*", ".*", ".*")
        yield f"amqp://{RABBITMQ_USER}:{RABBITMQ_PASSWORD}@{RABBITMQ_HOST}:{RABBITMQ_PORT}/{vhost}"
    finally:
        _rabbitmqctl("delete_vhost", vhost)
