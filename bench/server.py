"""Processes the benchmark starts: the API (``mlmarket serve``) and ``python -m ml_worker``, always on 127.0.0.1."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx

HOST = "127.0.0.1"
START_TIMEOUT_SECONDS = 90.0
STOP_TIMEOUT_SECONDS = 20.0
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the benchmark process dies, so no server outlives it (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int | None:
    """VmRSS of a process in KiB, from /proc/<pid>/status; None when it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


class ChildProcess:
    """A Python child process with its output in a log file; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        log = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [sys.executable, *self.args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        finally:
            log.close()

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with code {self.process.returncode}; log:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def rss_kib(self) -> int | None:
        return None if self.process is None or self.process.poll() is not None else rss_kib(self.pid)

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_SECONDS)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def child_env(settings_env: dict[str, str]) -> dict[str, str]:
    """The environment of a child: ours without any MLMARKET_* variable, plus the given ones."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLMARKET_")}
    env.update(settings_env)
    return env


class ApiServer(ChildProcess):
    """``python -m app.cli serve`` on a free port of 127.0.0.1."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        super().__init__(
            "API server",
            ["-m", "app.cli", "serve", "--host", HOST, "--port", str(self.port)],
            child_env(env),
            log_path,
        )
        self.base_url = f"http://{HOST}:{self.port}"
        grpc_port = env.get("MLMARKET_GRPC_PORT", "0")
        self.grpc_target = f"{HOST}:{grpc_port}" if grpc_port not in ("", "0") else None

    def start(self) -> None:
        super().start()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        last = "no answer"
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                r = httpx.get(f"{self.base_url}/api/health/ready", timeout=5)
                if r.status_code == 200:
                    return
                last = r.text
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the API server was not ready within {START_TIMEOUT_SECONDS:.0f}s ({last})")


class WorkerProcess(ChildProcess):
    """``python -m ml_worker``."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        super().__init__("ml_worker", ["-m", "ml_worker"], child_env(env), log_path)

    def wait_consuming(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Waits until the worker logs that it consumes from the broker."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                if "worker consuming" in self.log_path.read_text(errors="replace"):
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"ml_worker did not start consuming within {timeout:.0f}s; log:\n{self.log_tail()}")


def run_setup_script(script: Path, timeout: float) -> subprocess.CompletedProcess[str] | str:
    """Runs one of bench/'s setup scripts; its finished process, or why it did not finish."""
    try:
        return subprocess.run(  # noqa: S603 - our own script
            [shutil.which("bash") or "/bin/bash", str(script)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bench/{script.name} did not finish: {exc}"
