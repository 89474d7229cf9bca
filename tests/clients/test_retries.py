"""The client's retries, against a small local HTTP server that answers from a script (no mlmarket needed):
429 and 503 are sent again after Retry-After (or a backoff), a broken paid call is never sent twice."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from mlmarket_client import AsyncClient, Client, ConnectionFailed, RateLimited, ServiceUnavailable

from tests.samples import DIABETES_ROW

pytestmark = pytest.mark.timeout(60)

# A scripted answer: (status, headers, JSON body), or None to close the connection without answering.
Answer = tuple[int, dict[str, str], Any] | None
BALANCE: Answer = (200, {}, {"balance": 7})
ACCEPTED: Answer = (
    202,
    {},
    {
        "id": "t-1",
        "status": "succeeded",
        "model": "m",
        "version": 1,
        "cost": 1,
        "rows_accepted": 1,
        "rows_rejected": 0,
        "errors": [],
        "results": [1.5],
    },
)


@dataclass
class Scripted:
    """Answers each request with the next scripted answer (the last one repeats); records what came when."""

    answers: list[Answer]
    seen: list[tuple[str, str, float, str | None]] = field(default_factory=list)
    url: str = ""

    def next(self) -> Answer:
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    script = Scripted([BALANCE])

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            script.seen.append((self.command, self.path, time.monotonic(), self.headers.get("authorization")))
            answer = script.next()
            if answer is None:
                self.close_connection = True
                self.connection.shutdown(2)
                return
            status, headers, body = answer
            data = json.dumps(body).encode()
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    script.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield script
    server.shutdown()
    server.server_close()


def test_a_503_is_sent_again_after_the_retry_after_it_names(scripted: Scripted) -> None:
    scripted.answers = [(503, {"Retry-After": "1"}, {"detail": "the database is not answering"}), BALANCE]
    with Client(scripted.url, api_key="mlm_test") as client:
        assert client.balance() == 7
    assert [s[1] for s in scripted.seen] == ["/api/v1/wallet", "/api/v1/wallet"]
    assert scripted.seen[1][2] - scripted.seen[0][2] >= 0.95  # it waited as told, not less
    assert scripted.seen[0][3] == "Bearer mlm_test"


def test_429s_are_retried_with_backoff_and_a_paid_call_too(scripted: Scripted) -> None:
    too_many = (429, {}, {"detail": "slow down"})
    scripted.answers = [too_many, too_many, ACCEPTED]
    with Client(scripted.url, token="tok") as client:
        result = client.predict("m", [DIABETES_ROW])
    assert result.predictions == [1.5]
    assert [s[:2] for s in scripted.seen] == [("POST", "/api/v1/predictions")] * 3


def test_when_the_retries_run_out_the_typed_error_carries_the_status_and_the_header(scripted: Scripted) -> None:
    scripted.answers = [(429, {"Retry-After": "0"}, {"detail": "too many failed sign-ins"})]
    with Client(scripted.url, max_retries=2) as client, pytest.raises(RateLimited) as limited:
        client.balance()
    assert limited.value.status == 429 and limited.value.message == "too many failed sign-ins"
    assert limited.value.retry_after == "0"
    assert len(scripted.seen) == 3


def test_a_retry_after_longer_than_a_minute_is_not_waited_for(scripted: Scripted) -> None:
    scripted.answers = [(503, {"Retry-After": "3600"}, {"detail": "down for maintenance"}), BALANCE]
    with Client(scripted.url) as client, pytest.raises(ServiceUnavailable) as down:
        client.balance()
    assert down.value.status == 503 and down.value.headers["retry-after"] == "3600"
    assert len(scripted.seen) == 1


def test_a_broken_connection_is_retried_for_a_read_but_never_for_a_paid_call(scripted: Scripted) -> None:
    scripted.answers = [None, BALANCE]
    with Client(scripted.url) as client:
        assert client.balance() == 7
    assert len(scripted.seen) == 2

    scripted.seen.clear()
    scripted.answers = [None, ACCEPTED]
    with Client(scripted.url) as client, pytest.raises(ConnectionFailed):
        client.predict("m", [DIABETES_ROW])
    assert len(scripted.seen) == 1  # the request may have been charged: it is not sent twice


def test_a_server_that_is_not_there_is_a_connection_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        port = int(sock.getsockname()[1])
        with Client(f"http://127.0.0.1:{port}", max_retries=1) as client, pytest.raises(ConnectionFailed) as failed:
            client.models()
    assert failed.value.status is None


def test_the_async_twin_retries_the_same_way(scripted: Scripted) -> None:
    scripted.answers = [(503, {"Retry-After": "1"}, {"detail": "busy"}), BALANCE]

    async def run() -> int:
        async with AsyncClient(scripted.url, api_key="mlm_test") as client:
            return await client.balance()

    assert asyncio.run(run()) == 7
    assert scripted.seen[1][2] - scripted.seen[0][2] >= 0.95


def test_importing_the_client_imports_no_pandas() -> None:
    code = "import sys, mlmarket_client; print(sorted(m for m in ('pandas', 'numpy', 'app') if m in sys.modules))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.strip() == "[]", run.stdout + run.stderr
