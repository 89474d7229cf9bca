"""Schemathesis against the app's own OpenAPI schema: every operation, signed in, thousands of generated requests.

No answer may be a server error, and every answer must match what the schema
declares (status code, content type, body). The app runs on the embedded
default (SQLite, in-process queue) so the whole run stays fast.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlmodel import Session

from app import migrations
from app.core.db import make_engine
from app.main import create_app
from app.models.user import Role
from app.services import users
from tests.conftest import make_settings

EXAMPLES_PER_OPERATION = 50
MIN_CASES = 2000
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory, trained_demo_models: dict[str, Any]) -> Iterator[Any]:
    from app.models.catalog import ModelTask
    from app.services.demo import publish_trained
    from app.store import make_store

    data = Path(tmp_path_factory.mktemp("fuzz"))
    settings_ = make_settings(f"sqlite:///{data / 'mlmarket.db'}", data)
    migrations.upgrade(settings_)
    engine = make_engine(settings_)
    with Session(engine, expire_on_commit=False) as s:
        admin = users.create_user(s, email="fuzz@example.com", password="fuzz-password-1", role=Role.admin)
        spec, result = trained_demo_models["diabetes-linear"]
        publish_trained(
            s,
            make_store(settings_),
            name=spec.name,
            result=result,
            task=ModelTask(spec.task),
            algorithm=spec.algorithm,
            price_per_row=1,
            owner_id=admin.id,
            description=spec.description,
        )
    engine.dispose()
    app = create_app(settings_)
    with TestClient(app) as client:  # runs the lifespan: relay and in-process worker
        r = client.post("/api/v1/auth/token", data={"username": "fuzz@example.com", "password": "fuzz-password-1"})
        token = r.json()["access_token"]
        client.post(
            "/api/v1/wallet/top-ups",
            json={"amount": 1_000_000},
            headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "fuzz"},
        )
        app.state.fuzz_token = token
        yield app


def test_every_operation_answers_without_server_errors_and_as_documented(fuzz_app: Any) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)
    headers = {"Authorization": f"Bearer {fuzz_app.state.fuzz_token}"}
    cases: Counter[str] = Counter()
    failures: dict[str, str] = {}
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            cases[case.operation.label] += 1
            case.call_and_validate(headers=headers, checks=CHECKS)

        try:
            run()
        except (Exception, BaseExceptionGroup) as exc:  # every operation is fuzzed; failures are reported together
            failures[operation.label] = f"{type(exc).__name__}: {exc}"[:3000]
    print(f"\nschemathesis: {sum(cases.values())} cases over {len(cases)} operations")
    assert not failures, "\n\n".join(f"{label}\n{error}" for label, error in failures.items())
    assert sum(cases.values()) >= MIN_CASES
    assert len(cases) == len(list(schema.get_all_operations()))
