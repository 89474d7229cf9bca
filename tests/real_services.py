"""Helpers for tests on the real services: settings as environment variables, free ports, worker processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from app.core.config import Settings
from tests.conftest import make_settings
from tests.s3_server import S3Server

REPO = Path(__file__).resolve().parents[1]


def services_settings(database_url: str, rabbitmq_url: str, s3: S3Server, data_dir: Path, **overrides: Any) -> Settings:
    """An API on the real services that runs no worker itself: tasks go through RabbitMQ, files through S3.

    Each call gets a key prefix of its own in the shared bucket; retries and the relay are quick for tests.
    """
    values: dict[str, Any] = {
        "broker_url": rabbitmq_url,
        "run_worker_in_api": False,
        "s3_endpoint_url": s3.endpoint_url,
        "s3_bucket": s3.bucket,
        "s3_prefix": f"test-{uuid.uuid4().hex[:8]}",
        "s3_access_key_id": s3.access_key,
        "s3_secret_access_key": s3.secret_key,
        "retry_base_delay_seconds": 0.2,
        "outbox_poll_seconds": 0.1,
    }
    return make_settings(database_url, data_dir, **{**values, **overrides})


def as_env(settings: Settings, data_dir: Path) -> dict[str, str]:
    """The environment a child process needs to build the same Settings, with a data folder of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLMARKET_")}
    for field, value in settings.model_dump().items():
        if value is not None:
            env[f"MLMARKET_{field.upper()}"] = str(value.value if hasattr(value, "value") else value)
    env["MLMARKET_DATA_DIR"] = str(data_dir)
    env.pop("MLMARKET_STORE_DIR", None)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Workers:
    """`python -m ml_worker` processes, each with its own data folder (they share only the services)."""

    def __init__(self, settings: Settings, root: Path) -> None:
        self.settings = settings
        self.root = root
        self.procs: list[subprocess.Popen[bytes]] = []
        self.health_ports: list[int] = []

    def start(self) -> subprocess.Popen[bytes]:
        data = self.root / f"worker-{len(self.procs)}"
        log = (self.root / f"worker-{len(self.procs)}.log").open("wb")
        env = as_env(self.settings, data)
        self.health_ports.append(free_port())
        env.update(MLMARKET_WORKER_HEALTH_HOST="127.0.0.1", MLMARKET_WORKER_HEALTH_PORT=str(self.health_ports[-1]))
        proc = subprocess.Popen([sys.executable, "-m", "ml_worker"], env=env, cwd=REPO, stdout=log, stderr=log)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
