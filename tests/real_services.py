"""Helpers for tests on the real services: settings as environment variables, free ports, worker processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from app.core.config import Settings

REPO = Path(__file__).resolve().parents[1]


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
