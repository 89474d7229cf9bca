"""Schemathesis against the app's own OpenAPI schema: every operation, signed in, thousands of generated requests.

No answer may be a server error, and every answer must match what the schema
declares (status code, content type, body). The app runs on the embedded
default (SQLite, in-process queue) so the whole run stays fast.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

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


# -- hostile values in every parameter ---------------------------------------------------------------------
# Each value below, put in turn into every path, query and header parameter, every JSON body property and every
# form field of every operation, must be refused with a 4xx (a huge integer only where an integer is expected;
# in free text it may be taken). This runs on PostgreSQL, which refuses NUL characters that SQLite would store.

DEEP = 10_000
HOSTILE_TEXT = {"nul": "a\x00b", "lone surrogate": "x\ud800y", "low surrogate": "\udc00"}
HUGE = 2**63
PLACEHOLDERS = {"user_id": "1", "dataset_id": "1", "key_id": "1", "version": "1", "name": "diabetes-linear"}


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    for key in ("anyOf", "allOf", "oneOf"):
        if key in schema:
            options = [_resolve(spec, s) for s in schema[key] if s.get("type") != "null"]
            return options[0] if options else {}
    return schema


def _plain(spec: dict[str, Any], schema: dict[str, Any]) -> Any:
    """An ordinary value of the schema's type, for the parameters not under test."""
    schema = _resolve(spec, schema)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "integer":
        return max(1, int(schema.get("minimum", 1)))
    if kind == "number":
        return 1.0
    if kind == "boolean":
        return False
    if kind == "array":
        return []
    if kind == "object":
        return {k: _plain(spec, v) for k, v in schema.get("properties", {}).items()}
    return "plain"


def _json_text(body: Any) -> str:
    """JSON as a client sends it: NULs and surrogates as \\u escapes; the deep marker as 10,000 nested lists."""
    return json.dumps(body).replace('"__deep__"', "[" * DEEP + "]" * DEEP)


def _quoted(value: str) -> str:
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


class Prober:
    """Sends one operation with one value replaced, and keeps what came back wrong."""

    def __init__(self, client: TestClient, headers: dict[str, str]) -> None:
        self.client = client
        self.headers = headers
        self.failures: list[str] = []
        self.sent = 0

    def check(self, label: str, r: Any, must_refuse: bool) -> None:
        self.sent += 1
        if r.status_code >= 500 or (must_refuse and not 400 <= r.status_code < 500):
            self.failures.append(f"{label}: {r.status_code} {r.text[:200]}")
        elif not r.headers.get("content-type", "").startswith(("application/json", "text/event-stream")):
            self.failures.append(f"{label}: {r.status_code} answered {r.headers.get('content-type')}")

    def send(
        self,
        method: str,
        template: str,
        path_values: dict[str, str],
        query: dict[str, str] | None = None,
        body: str | None = None,
        extra_headers: dict[str, str] | None = None,
    ) -> Any:
        url = template
        for name, value in path_values.items():
            url = url.replace("{" + name + "}", _quoted(value))
        if query:
            url += "?" + "&".join(f"{k}={_quoted(v)}" for k, v in query.items())
        headers = {**self.headers, "Idempotency-Key": "hostile", **(extra_headers or {})}
        if body is None:
            return self.client.request(method, url, headers=headers)
        return self.client.request(method, url, content=body.encode(), headers={**headers, **JSON})

    def operation(self, spec: dict[str, Any], template: str, method: str, operation: dict[str, Any]) -> None:
        label = f"{method} {template}"
        params = operation.get("parameters", [])
        path = {p["name"]: PLACEHOLDERS.get(p["name"], "1") for p in params if p["in"] == "path"}
        content = operation.get("requestBody", {}).get("content", {})
        json_schema = content.get("application/json", {}).get("schema")
        body = _plain(spec, json_schema) if json_schema else None
        body_text = _json_text(body) if body is not None else None
        for param in params:
            name, where = param["name"], param["in"]
            is_integer = _resolve(spec, param.get("schema", {})).get("type") == "integer"
            for kind, value in [*HOSTILE_TEXT.items(), ("huge", str(HUGE)), ("deep", "[" * 50 + "]" * 50)]:
                if where == "path":
                    r = self.send(method, template, {**path, name: value}, body=body_text)
                elif where == "query":
                    r = self.send(method, template, path, {name: value}, body=body_text)
                elif where == "header" and kind not in HOSTILE_TEXT:  # no HTTP client sends a NUL in a header
                    r = self.send(method, template, path, body=body_text, extra_headers={name: value})
                else:
                    continue
                refused = kind in HOSTILE_TEXT or (kind == "huge" and is_integer)
                self.check(f"{label} {where} {name}={kind}", r, refused)
        if isinstance(body, dict):
            for prop in body:
                for kind, hostile in [*HOSTILE_TEXT.items(), ("huge", HUGE), ("deep", "__deep__")]:
                    r = self.send(method, template, path, body=_json_text({**body, prop: hostile}))
                    self.check(f"{label} body {prop}={kind}", r, kind != "huge")
        if json_schema is not None:
            self.check(
                f"{label} body nested {DEEP} deep", self.send(method, template, path, body=_json_text("__deep__")), True
            )
        self.forms(spec, label, method, template, content)

    def forms(self, spec: dict[str, Any], label: str, method: str, url: str, content: dict[str, Any]) -> None:
        for media in ("multipart/form-data", "application/x-www-form-urlencoded"):
            schema = content.get(media, {}).get("schema")
            fields = [f for f in _resolve(spec, schema).get("properties", {}) if f != "file"] if schema else []
            for field in fields:
                for kind, value in HOSTILE_TEXT.items():
                    form = {**dict.fromkeys(fields, "plain"), field: value}
                    if media == "multipart/form-data":
                        if kind != "nul":
                            continue  # a surrogate has no UTF-8 bytes to send in a form part
                        files = {"file": ("x.csv", b"a,target\n1,2\n", "text/csv")}
                        r = self.client.request(method, url, data=form, files=files, headers=self.headers)
                    else:
                        encoded = "&".join(f"{k}={_quoted(v)}" for k, v in form.items())
                        r = self.client.request(method, url, content=encoded.encode(), headers={"Content-Type": media})
                    self.check(f"{label} form {field}={kind}", r, kind == "nul")


JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize("db_backend", ["postgresql"], indirect=True)
def test_nul_surrogates_huge_numbers_and_deep_nesting_in_every_parameter_are_4xx(
    client: TestClient, admin_headers: dict[str, str], publish_model: Any
) -> None:
    publish_model("diabetes-linear")
    spec = client.get("/openapi.json").json()
    prober = Prober(client, admin_headers)
    for template, operations in spec["paths"].items():
        for method, operation in operations.items():
            prober.operation(spec, template, method.upper(), operation)
    assert prober.sent > 400
    assert not prober.failures, "\n".join(prober.failures[:60])
