"""Signed webhooks end to end: a receiver on 127.0.0.1 (allowed by MLMARKET_WEBHOOK_ALLOW_PRIVATE) gets each event
once, signed as the Standard Webhooks specification says; failures are retried and every attempt is listed.

On PostgreSQL the events go through a real RabbitMQ (a worker inside the API consumes it); on SQLite through the
embedded queue. Signatures are checked here with an HMAC written from the specification, not with mlmarket's code.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sklearn.datasets import load_iris
from sqlalchemy.engine import Engine
from sqlmodel import Session, delete, select

from app.core.config import Settings
from app.main import create_app
from app.models.webhook import WebhookDelivery, WebhookEvent
from ml_worker.webhooks import WebhookSender
from tests.conftest import make_settings
from tests.samples import DIABETES_ROW

PREDICT = "/api/v1/predictions"
SECRET = "/api/v1/webhooks/secret"
JOBS = "/api/v1/training-jobs"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A webhook receiver: records every request; answers each path from a script (then 204)."""

    url: str
    requests: list[Received] = field(default_factory=list)
    script: dict[str, list[int]] = field(default_factory=dict)

    def to(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            with lock:
                state.requests.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                scripted = state.script.get(self.path) or []
                code = scripted.pop(0) if scripted else 204
            self.send_response(code)
            if 300 <= code < 400:
                self.send_header("Location", "/landing")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def settings(db_backend: str, database_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """Quick retries; PostgreSQL with a real RabbitMQ and the worker inside the API, SQLite with the embedded queue."""
    overrides: dict[str, Any] = {
        "webhook_allow_private": True,
        "webhook_max_attempts": 3,
        "webhook_retry_base_seconds": 0.2,
        "outbox_poll_seconds": 0.1,
    }
    if db_backend == "postgresql":
        overrides.update(broker_url=request.getfixturevalue("rabbitmq_url"), run_worker_in_api=True)
    return make_settings(database_url, tmp_path / "data", **overrides)


def verifies(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The Standard Webhooks check: HMAC-SHA256 of "{id}.{timestamp}.{body}" with the base64 key after whsec_,
    compared with each ``v1,<base64>`` of the signature header."""
    key = base64.b64decode(secret.split("_", 1)[1])
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    candidates = [p.split(",", 1)[1] for p in headers["webhook-signature"].split() if p.startswith("v1,")]
    return any(hmac.compare_digest(c, expected) for c in candidates)


def signed_in(client: TestClient, credits: int = 1000) -> dict[str, str]:
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    assert client.post("/api/v1/auth/register", json={"email": email, "password": "password-1"}).status_code == 201
    token = client.post("/api/v1/auth/token", data={"username": email, "password": "password-1"}).json()
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    r = client.post("/api/v1/wallet/top-ups", json={"amount": credits}, headers={**headers, "Idempotency-Key": email})
    assert r.status_code == 201, r.text
    return headers


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def deliveries(client: TestClient, headers: dict[str, str], task_id: str) -> list[dict[str, Any]]:
    r = client.get(f"{PREDICT}/{task_id}/webhook-deliveries", headers=headers)
    assert r.status_code == 200, r.text
    return list(r.json())


def event_statuses(engine: Engine, task_id: str) -> dict[str, str]:
    with Session(engine) as s:
        return {e.event: e.status for e in s.exec(select(WebhookEvent).where(WebhookEvent.task_id == task_id))}


def test_each_event_is_delivered_once_signed_with_the_users_secret(
    client: TestClient, publish_model: Callable[..., Any], receiver: Receiver
) -> None:
    publish_model("diabetes-linear")
    headers = signed_in(client)
    secret = client.get(SECRET, headers=headers).json()["secret"]
    assert secret.startswith("whsec_")
    assert client.get(SECRET, headers=headers).json()["secret"] == secret  # created once, on first read

    r = client.post(
        PREDICT,
        json={
            "model": "diabetes-linear",
            "rows": [DIABETES_ROW, DIABETES_ROW],
            "webhook": receiver.url + "/hooks",
            "webhook_events": ["started", "completed"],
        },
        headers=headers,
    )
    assert r.status_code == 202, r.text
    task_id = r.json()["id"]
    listed = wait_for(
        lambda: (d := deliveries(client, headers, task_id)) and sum(x["delivered"] for x in d) == 2 and d,
        "both events delivered",
    )

    got = receiver.to("/hooks")
    assert len(got) == 2 and len(listed) == 2
    assert len({g.headers["webhook-id"] for g in got}) == 2
    for g in got:
        assert verifies(secret, g.headers, g.body)
        assert abs(int(g.headers["webhook-timestamp"]) - time.time()) < 300
        assert g.headers["content-type"] == "application/json"
        assert json.loads(g.body)["id"] == task_id
    assert not verifies(
        "whsec_" + base64.b64encode(b"another key of 32 bytes, really!").decode(), got[0].headers, got[0].body
    )
    bodies = {json.loads(g.body)["status"]: json.loads(g.body) for g in got}
    assert set(bodies) == {"running", "succeeded"}
    assert bodies["succeeded"] == client.get(f"{PREDICT}/{task_id}", headers=headers).json()
    assert bodies["running"]["results"] is None and bodies["running"]["started_at"] is not None
    assert {x["event"] for x in listed} == {"started", "completed"}
    assert all(x["status_code"] == 204 and x["attempt"] == 1 for x in listed)

    # Deliveries are the task owner's: anyone else is answered as for a task that does not exist.
    stranger = signed_in(client)
    assert client.get(f"{PREDICT}/{task_id}/webhook-deliveries", headers=stranger).status_code == 404
    assert client.get(f"{PREDICT}/{uuid.uuid4()}/webhook-deliveries", headers=headers).status_code == 404


@pytest.mark.parametrize("db_backend", ["postgresql"], indirect=True)
def test_a_failed_delivery_is_retried_and_a_redirect_is_not_followed(
    client: TestClient, engine: Engine, publish_model: Callable[..., Any], receiver: Receiver
) -> None:
    publish_model("diabetes-linear")
    headers = signed_in(client)
    receiver.script["/flaky"] = [500]
    receiver.script["/moved"] = [307, 307, 307]
    csv = ",".join(DIABETES_ROW) + "\n" + ",".join(str(v) for v in DIABETES_ROW.values()) + "\n"
    r = client.post(
        PREDICT,
        data={"model": "diabetes-linear", "webhook": receiver.url + "/flaky"},
        files={"file": ("rows.csv", csv, "text/csv")},
        headers=headers,
    )
    assert r.status_code == 202, r.text
    flaky = r.json()["id"]
    r = client.post(
        PREDICT,
        json={"model": "diabetes-linear", "rows": [DIABETES_ROW], "webhook": receiver.url + "/moved"},
        headers=headers,
    )
    assert r.status_code == 202, r.text
    moved = r.json()["id"]

    listed = wait_for(
        lambda: (d := deliveries(client, headers, flaky)) and d[-1]["delivered"] and d, "the retried delivery"
    )
    assert [(x["attempt"], x["status_code"], x["delivered"]) for x in listed] == [(1, 500, False), (2, 204, True)]
    assert all(x["event"] == "completed" for x in listed)
    first, second = receiver.to("/flaky")
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert first.body == second.body
    secret = client.get(SECRET, headers=headers).json()["secret"]
    assert verifies(secret, first.headers, first.body) and verifies(secret, second.headers, second.body)
    assert json.loads(second.body)["status"] == "succeeded"

    # A redirect is an answer like any other that is not 2xx: retried to the same URL, never followed.
    wait_for(lambda: event_statuses(engine, moved).get("completed") == "failed", "the redirected event given up")
    listed = deliveries(client, headers, moved)
    assert [(x["attempt"], x["status_code"], x["delivered"]) for x in listed] == [
        (1, 307, False),
        (2, 307, False),
        (3, 307, False),
    ]
    assert len(receiver.to("/moved")) == 3
    assert receiver.to("/landing") == []


@pytest.mark.parametrize("db_backend", ["postgresql"], indirect=True)
def test_an_event_whose_message_was_lost_is_published_again_by_the_relays_sweep(
    client: TestClient, engine: Engine, publish_model: Callable[..., Any], receiver: Receiver
) -> None:
    publish_model("diabetes-linear")
    headers = signed_in(client)
    r = client.post(
        PREDICT,
        json={"model": "diabetes-linear", "rows": [DIABETES_ROW], "webhook": receiver.url + "/lost"},
        headers=headers,
    )
    assert r.status_code == 202, r.text
    task_id = r.json()["id"]
    wait_for(lambda: event_statuses(engine, task_id).get("completed") == "delivered", "the first delivery")
    relay = client.app.state.relay  # type: ignore[attr-defined]
    assert relay.requeue_stale_webhooks(0) == 0  # delivered: nothing to send again

    # The broker lost the message: the event is still pending, its outbox row sent, and no attempt was made.
    with Session(engine) as s:
        event = s.exec(select(WebhookEvent).where(WebhookEvent.task_id == task_id)).one()
        s.exec(delete(WebhookDelivery).where(WebhookDelivery.event_id == event.id))  # type: ignore[call-overload]
        event.status, event.attempts, event.finished_at = "pending", 0, None
        s.add(event)
        s.commit()
    assert relay.requeue_stale_webhooks(3600) == 0  # published moments ago: its retries may still be waiting
    assert relay.requeue_stale_webhooks(0) == 1
    relay.wake()
    wait_for(lambda: event_statuses(engine, task_id).get("completed") == "delivered", "the delivery after the sweep")
    first, again = receiver.to("/lost")
    assert first.headers["webhook-id"] == again.headers["webhook-id"] and first.body == again.body
    secret = client.get(SECRET, headers=headers).json()["secret"]
    assert verifies(secret, again.headers, again.body)
    assert [x["attempt"] for x in deliveries(client, headers, task_id)] == [1]


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)
def test_unsafe_or_malformed_webhooks_are_refused_with_422_and_charge_nothing(settings: Settings) -> None:
    strict = settings.model_copy(update={"webhook_allow_private": False})
    with TestClient(create_app(strict), raise_server_exceptions=False) as client:
        headers = signed_in(client, credits=500)
        for webhook, events in [
            ("http://example.com/hooks", None),
            ("https://127.0.0.1/hooks", None),
            ("https://10.1.2.3/hooks", None),
            ("https://169.254.169.254/latest/meta-data", None),
            ("https://[::1]:8443/hooks", None),
            ("https://[::ffff:192.168.0.1]/hooks", None),
            ("https://localhost/hooks", None),
            ("https://2130706433/hooks", None),  # 127.0.0.1 in a form resolvers accept
            ("ftp://example.com/hooks", None),
            ("https://user:pass@example.com/hooks", None),
            ("not a url", None),
            ("https://example.com/hooks", ["finished"]),
            (None, ["completed"]),
        ]:
            body: dict[str, Any] = {"model": "diabetes-linear", "rows": [DIABETES_ROW], "webhook": webhook}
            if events is not None:
                body["webhook_events"] = events
            r = client.post(PREDICT, json=body, headers=headers)
            assert r.status_code == 422, (webhook, events, r.text)
            assert r.json()["detail"], r.text
        r = client.post(
            PREDICT,
            data={"model": "diabetes-linear", "webhook": "http://127.0.0.1:9/hooks"},
            files={"file": ("rows.csv", ",".join(DIABETES_ROW) + "\n", "text/csv")},
            headers=headers,
        )
        assert r.status_code == 422, r.text
        assert client.get("/api/v1/wallet", headers=headers).json()["balance"] == 500
        assert client.get(PREDICT, headers=headers).json() == []


def test_the_sender_never_reaches_a_private_address_unless_allowed(receiver: Receiver) -> None:
    port = receiver.url.rsplit(":", 1)[1]

    async def send(url: str, allow_private: bool) -> Any:
        sender = WebhookSender(timeout=2, allow_private=allow_private)
        try:
            return await sender.post(url, b"{}", {"content-type": "application/json"})
        finally:
            await sender.aclose()

    # a name that resolves to loopback, and the literal address, over both schemes
    for url in (f"http://localhost:{port}/a", f"https://localhost:{port}/a", f"http://127.0.0.1:{port}/a"):
        outcome = asyncio.run(send(url, allow_private=False))
        assert outcome.status_code is None and outcome.error.startswith("refused"), (url, outcome)
    assert receiver.requests == []
    assert asyncio.run(send(f"http://localhost:{port}/b", allow_private=True)).status_code == 204
    assert [r.path for r in receiver.requests] == ["/b"]
    assert receiver.requests[0].headers["host"] == f"localhost:{port}"


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)
def test_a_training_job_calls_its_webhook_signed_with_the_new_and_the_previous_secret_after_a_rotation(
    client: TestClient, receiver: Receiver
) -> None:
    headers = signed_in(client)
    old = client.get(SECRET, headers=headers).json()["secret"]
    r = client.post(SECRET + "/rotate", headers=headers)
    assert r.status_code == 200, r.text
    new = r.json()["secret"]
    assert new != old and client.get(SECRET, headers=headers).json()["secret"] == new
    frame = load_iris(as_frame=True).frame
    r = client.post(
        "/api/v1/datasets",
        files={"file": ("iris.csv", frame.to_csv(index=False).encode(), "text/csv")},
        headers=headers,
    )
    assert r.status_code == 201, r.text
    r = client.post(
        JOBS,
        json={
            "dataset_id": r.json()["id"],
            "algorithm": "LogisticRegression",
            "webhook": receiver.url + "/training",
            "webhook_events": ["completed", "started"],
        },
        headers=headers,
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    wait_for(lambda: len(receiver.to("/training")) == 2, "both training events", timeout=60)

    got = receiver.to("/training")
    assert all(len(g.headers["webhook-signature"].split()) == 2 for g in got)
    assert all(verifies(new, g.headers, g.body) and verifies(old, g.headers, g.body) for g in got)
    bodies = {json.loads(g.body)["status"]: json.loads(g.body) for g in got}
    assert set(bodies) == {"running", "succeeded"}
    assert bodies["succeeded"] == client.get(f"{JOBS}/{job_id}", headers=headers).json()
    listed = client.get(f"{JOBS}/{job_id}/webhook-deliveries", headers=headers).json()
    assert sorted(x["event"] for x in listed) == ["completed", "started"]

    r = client.post(
        JOBS, json={"dataset_id": 1, "algorithm": "LogisticRegression", "webhook": "ftp://x"}, headers=headers
    )
    assert r.status_code == 422, r.text


def self_signed_localhost(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for the name ``localhost`` only (not for 127.0.0.1), and its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def test_https_goes_to_the_checked_address_and_verifies_the_host_name(tmp_path: Path) -> None:
    cert, key = self_signed_localhost(tmp_path)
    server_names: list[str | None] = []
    hosts: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", "0")))
            hosts.append(self.headers["host"])
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda _sock, name, _ctx: server_names.append(name)  # type: ignore[func-returns-value]
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]

    async def send(url: str, trust: ssl.SSLContext | bool) -> Any:
        sender = WebhookSender(timeout=3, allow_private=True, verify=trust)
        try:
            return await sender.post(url, b"{}", {"content-type": "application/json"})
        finally:
            await sender.aclose()

    try:
        trusted = ssl.create_default_context(cafile=str(cert))
        # the name resolves to 127.0.0.1, which is dialled; TLS is for the name (SNI and certificate check)
        assert asyncio.run(send(f"https://localhost:{port}/hook", trusted)).status_code == 200
        assert server_names == ["localhost"] and hosts == [f"localhost:{port}"]
        # the same server by its address: the certificate does not name it, so nothing is delivered
        outcome = asyncio.run(send(f"https://127.0.0.1:{port}/hook", trusted))
        assert outcome.status_code is None and "certificate" in outcome.error.lower()
        # a certificate nobody vouches for is refused with the default trust store
        outcome = asyncio.run(send(f"https://localhost:{port}/hook", True))
        assert outcome.status_code is None and "certificate" in outcome.error.lower()
        assert hosts == [f"localhost:{port}"]
    finally:
        server.shutdown()
        server.server_close()
