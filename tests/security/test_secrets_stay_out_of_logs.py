"""A database error while registering or signing in logs neither the statement's values nor any secret.

The database is made to refuse the writes (a trigger raising an error), as a
full disk or a broken constraint would: the API answers 500 and logs the error,
and the log must hold no email, password, password hash or token.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

pytestmark = pytest.mark.parametrize("db_backend", ["postgresql"], indirect=True)

EMAIL = "secret-keeper@example.com"
PASSWORD = "a-password-nobody-may-read"


@contextmanager
def refusing_writes(engine: Engine) -> Iterator[None]:
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE OR REPLACE FUNCTION mlmarket_test_refuse() RETURNS trigger AS $$ "
                "BEGIN RAISE EXCEPTION 'writes refused for this test'; END $$ LANGUAGE plpgsql"
            )
        )
        for table in ("users", "login_failures"):
            conn.execute(
                sa.text(
                    f"CREATE TRIGGER mlmarket_test_refuse BEFORE INSERT ON {table} "
                    "FOR EACH ROW EXECUTE FUNCTION mlmarket_test_refuse()"
                )
            )
    try:
        yield
    finally:
        with engine.begin() as conn:
            for table in ("users", "login_failures"):
                conn.execute(sa.text(f"DROP TRIGGER IF EXISTS mlmarket_test_refuse ON {table}"))
            conn.execute(sa.text("DROP FUNCTION IF EXISTS mlmarket_test_refuse()"))


def test_database_errors_on_register_and_sign_in_log_no_values_or_secrets(
    client: TestClient, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    # Someone already registered: their sign-in works, and their failed sign-in writes (and fails) below.
    assert client.post("/api/v1/auth/register", json={"email": EMAIL, "password": PASSWORD}).status_code == 201
    token = client.post("/api/v1/auth/token", data={"username": EMAIL, "password": PASSWORD}).json()["access_token"]
    with engine.connect() as conn:
        password_hash = conn.execute(
            sa.text("SELECT hashed_password FROM users WHERE email = :e"), {"e": EMAIL}
        ).scalar_one()

    caplog.set_level(logging.DEBUG)
    with refusing_writes(engine):
        request = client.post(
            "/api/v1/auth/register",
            json={"email": "newcomer@example.com", "password": PASSWORD, "full_name": "New Comer"},
        )
        assert request.status_code == 500
        failed = client.post("/api/v1/auth/token", data={"username": EMAIL, "password": PASSWORD + "-wrong"})
        assert failed.status_code == 500
        me = client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200

    logged = caplog.text + "".join(r.getMessage() for r in caplog.records)
    assert "writes refused for this test" in logged  # the error itself is logged
    for secret in (PASSWORD, password_hash, "$argon2", token, EMAIL, "newcomer@example.com", "New Comer"):
        assert secret not in logged, secret
