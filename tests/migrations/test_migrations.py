from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

import app.models  # noqa: F401
from app import migrations
from tests.conftest import make_settings


def test_migrations_match_the_models(database_url: str) -> None:
    engine = sa.create_engine(make_settings(database_url, Path(".")).sqlalchemy_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    engine.dispose()
    assert diff == []


def test_migrations_go_down_and_up_again(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path)
    migrations.downgrade(settings, "base")
    engine = sa.create_engine(settings.sqlalchemy_url)
    assert "ledger_entries" not in sa.inspect(engine).get_table_names()
    migrations.upgrade(settings)
    assert {"users", "accounts", "ledger_entries", "charge_holds"} <= set(sa.inspect(engine).get_table_names())
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM accounts WHERE name = 'platform'")).scalar_one() == 1
    engine.dispose()
