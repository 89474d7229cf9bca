"""The ``mlmarket`` command and ``init.sh``, run as a person would run them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import TEST_SECRET

REPO = Path(__file__).resolve().parents[1]
MLMARKET = [sys.executable, "-m", "app.cli"]


def run(args: list[str], env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*MLMARKET, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture
def cli_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLMARKET_")}
    env.update(MLMARKET_DATABASE_URL=database_url, MLMARKET_DATA_DIR=str(tmp_path), MLMARKET_SECRET_KEY=TEST_SECRET)
    return env


def test_migrate_create_admin_and_verify_the_ledger(cli_env: dict[str, str]) -> None:
    assert "head" in run(["migrate"], cli_env).stdout
    created = run(["create-admin", "--email", "Root@Example.com", "--password", "admin-pass-1"], cli_env)
    assert "created admin root@example.com" in created.stdout
    again = run(["create-admin", "--email", "root@example.com"], {**cli_env, "MLMARKET_ADMIN_PASSWORD": "admin-pass-2"})
    assert "updated admin" in again.stdout
    verify = run(["ledger", "verify"], cli_env)
    assert "ledger OK" in verify.stdout
    assert '"ok": true' in run(["ledger", "verify", "--json"], cli_env).stdout


def test_create_admin_refuses_a_short_password(cli_env: dict[str, str]) -> None:
    result = run(["create-admin", "--email", "x@example.com", "--password", "short"], cli_env, check=False)
    assert result.returncode != 0
    assert "password" in result.stderr


def test_ledger_verify_exits_non_zero_on_a_mismatch(cli_env: dict[str, str], database_url: str) -> None:
    import sqlalchemy as sa

    from tests.conftest import make_settings

    engine = sa.create_engine(make_settings(database_url, Path(".")).sqlalchemy_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE accounts SET balance = 7 WHERE name = 'platform'"))
    engine.dispose()
    result = run(["ledger", "verify"], cli_env, check=False)
    assert result.returncode == 1
    assert "LEDGER MISMATCH" in result.stdout


def test_production_refuses_to_serve_with_a_default_secret(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLMARKET_")}
    env.update(MLMARKET_ENV="production", MLMARKET_SECRET_KEY="changeme", MLMARKET_DATABASE_URL="postgresql://x@h/db")
    result = subprocess.run([*MLMARKET, "serve"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "MLMARKET_SECRET_KEY" in result.stderr
    assert "Traceback" not in result.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_init_sh_runs_the_demo_where_the_client_can_pay_for_a_prediction(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLMARKET_")}
    env.update(MLMARKET_DATA_DIR=str(tmp_path / "data"), MLMARKET_PORT=str(port), MLMARKET_GRPC_PORT=str(free_port()))
    proc = subprocess.Popen(
        ["bash", str(REPO / "init.sh")],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        docs = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                docs = httpx.get(f"http://127.0.0.1:{port}/docs", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.5)
        assert docs is not None, "init.sh did not bring the API up"
        assert docs.status_code == 200
        assert "swagger" in docs.text.lower()
        assert (tmp_path / "data" / "mlmarket.db").exists()
        base = f"http://127.0.0.1:{port}"
        creds = json.loads((tmp_path / "data" / "demo_credentials.json").read_text())
        token = httpx.post(
            f"{base}/api/v1/auth/token",
            data={"username": "demo-client@example.com", "password": creds["client_password"]},
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{base}/api/v1/wallet", headers=headers).json() == {"balance": 600}
        names = {m["name"] for m in httpx.get(f"{base}/api/v1/models").json()}
        assert names == {"diabetes-linear", "diabetes-forest", "iris-logistic", "iris-forest"}
        row = {"sepal_length_cm": 6.7, "sepal_width_cm": 3.0, "petal_length_cm": 5.2, "petal_width_cm": 2.3}
        r = httpx.post(f"{base}/api/v1/predictions", json={"model": "iris-forest", "rows": [row]}, headers=headers)
        assert r.status_code == 202, r.text
        deadline = time.monotonic() + 30
        while (task := httpx.get(f"{base}/api/v1/predictions/{r.json()['id']}", headers=headers).json())[
            "status"
        ] not in ("succeeded", "failed") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert task["status"] == "succeeded"
        assert task["results"] == ["virginica"]
        assert httpx.get(f"{base}/api/v1/wallet", headers=headers).json() == {"balance": 600 - task["cost"]}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        output = proc.communicate(timeout=30)[0]
    assert f"http://127.0.0.1:{port}/docs" in output
    assert "demo-client@example.com" in output
