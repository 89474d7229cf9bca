from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from app.core.config import Settings
from app.services import catalog, demo, ledger, users
from app.store import make_store


def snapshot(engine: Engine) -> dict[str, object]:
    with engine.connect() as conn:
        return {
            table: conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
            for table in ("users", "accounts", "ledger_entries", "model_versions")
        } | {"balances": sorted(conn.execute(sa.text("SELECT name, balance FROM accounts")).all())}


def test_demo_seed_creates_users_credits_and_models_and_is_idempotent(engine: Engine, settings: Settings) -> None:
    store = make_store(settings)
    first = demo.seed(engine, store, settings)
    assert first.published_models == ["diabetes-linear", "diabetes-forest", "iris-logistic", "iris-forest"]
    assert first.client_balance == 600
    state = snapshot(engine)

    second = demo.seed(engine, store, settings)
    assert second.published_models == []
    assert second.created_users == []
    assert second.credentials == first.credentials
    assert snapshot(engine) == state

    with Session(engine) as s:
        admin = users.authenticate(s, "demo-admin@example.com", first.credentials.admin_password)
        client = users.authenticate(s, "demo-client@example.com", first.credentials.client_password)
        assert admin is not None and admin.role == "admin"
        assert client is not None and ledger.balance_of(s, client.id or 0) == 600
        models = {m.name: m for m in catalog.list_catalog(s)}
        assert models["diabetes-forest"].algorithm == "RandomForestRegressor"
        assert models["iris-logistic"].task == "classification"
        assert all(m.owner_id == admin.id for m in models.values())
        assert ledger.verify(s).ok
    # Every artifact is in the DVC remote: a fresh store that shares only the remote can fetch it.
    fresh = make_store(settings.model_copy(update={"store_dir": settings.data_dir / "elsewhere"}))
    for model in models.values():
        assert fresh.fetch(catalog.artifact_ref(model)).stat().st_size == model.artifact_size
