from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.core.config import Environment, Settings

STRONG = "k" * 48


@pytest.mark.parametrize("secret", [None, "", "changeme", "secret", "CHANGETHIS", "short-but-not-default"])
def test_production_refuses_missing_default_or_short_secrets(secret: str | None, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="MLMARKET_SECRET_KEY"):
        Settings(env=Environment.production, secret_key=secret, database_url="postgresql://x@db/x", data_dir=tmp_path)


def test_production_needs_a_database_url(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="MLMARKET_DATABASE_URL"):
        Settings(env=Environment.production, secret_key=STRONG, data_dir=tmp_path)


def test_production_starts_with_a_real_secret(tmp_path: Path) -> None:
    s = Settings(env=Environment.production, secret_key=STRONG, database_url="postgresql://x@db/x", data_dir=tmp_path)
    assert s.sqlalchemy_url == "postgresql+psycopg://x@db/x"
    assert s.resolved_secret_key() == STRONG


def test_production_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLMARKET_ENV", "production")
    monkeypatch.setenv("MLMARKET_SECRET_KEY", "changeme")
    monkeypatch.setenv("MLMARKET_DATABASE_URL", "postgresql://x@db/x")
    with pytest.raises(ValidationError):
        Settings()


def test_embedded_default_uses_sqlite_and_keeps_one_generated_secret(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path / "data")
    assert s.sqlalchemy_url == f"sqlite:///{(tmp_path / 'data' / 'mlmarket.db').as_posix()}"
    first = s.resolved_secret_key()
    assert len(first) >= 32
    assert Settings(data_dir=tmp_path / "data").resolved_secret_key() == first
    assert (tmp_path / "data" / "secret_key").stat().st_mode & 0o077 == 0
