"""Faults the fault-injection tests inflict on the real services, shared by every such test.

The broker is this machine's own RabbitMQ: ``rabbitmqctl close_all_connections -p <vhost>`` closes only the
connections of the test's own virtual host; the database faults touch only the test's own database.
"""

from __future__ import annotations

import random
import signal
import subprocess

import psycopg
import sqlalchemy as sa

from app.core.config import Settings
from tests.conftest import POSTGRES_ADMIN_URL
from tests.real_services import Workers


def vhost_of(settings: Settings) -> str:
    """The RabbitMQ virtual host the settings' broker URL names."""
    return (settings.broker_url or "").rsplit("/", 1)[-1]


def database_of(settings: Settings) -> str | None:
    """The name of the database the settings point at."""
    return sa.engine.make_url(settings.sqlalchemy_url).database


def broker_close_connections(vhost: str) -> None:
    """Closes every broker connection of ``vhost`` (the API's relay, the workers, the injector), and only those."""
    command = ["rabbitmqctl", "-q", "close_all_connections", "-p", vhost, "fault injection"]
    subprocess.run(command, check=True, capture_output=True, timeout=60)


def db_terminate_backends(database: str | None) -> int:
    """Terminates every connection to ``database`` but the caller's own; returns how many were terminated."""
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        killed = conn.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        ).fetchone()
    return int(killed[0] if killed else 0)


def live_workers(workers: Workers) -> list[subprocess.Popen[bytes]]:
    return [p for p in workers.procs if p.poll() is None]


def sigkill_and_replace(workers: Workers, victim: subprocess.Popen[bytes]) -> None:
    """SIGKILLs one worker process and starts another in its place."""
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    workers.start()


def kill_random_worker(workers: Workers, rng: random.Random, live: list[subprocess.Popen[bytes]] | None = None) -> None:
    """SIGKILLs a worker picked by ``rng`` among ``live`` (by default the live ones) and starts another."""
    sigkill_and_replace(workers, rng.choice(live_workers(workers) if live is None else live))
