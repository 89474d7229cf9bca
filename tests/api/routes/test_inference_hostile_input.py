"""Hostile Open Inference Protocol requests: refused with 4xx before billing, and never failing anyone else's.

Requests that arrive together are served and billed as one batch; a request that
cannot be stored (an over-long id, a NUL byte) must be refused before it joins one.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pandas as pd
import pytest
from sqlalchemy.engine import Engine

from app.core.config import Settings
from app.models.catalog import ModelTask
from tests.http_clients import balance, paying_user
from tests.models import train_and_publish

# PostgreSQL: the database that refuses what SQLite would store, and where batches are billed concurrently.
pytestmark = pytest.mark.parametrize("db_backend", ["postgresql"], indirect=True)

GOOD_ROW = {"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}


@pytest.fixture
def iris(publish_model: Callable[..., Any]) -> None:
    publish_model("iris-logistic", price=1)


@pytest.fixture
def colours(engine: Engine, settings: Settings) -> None:
    frame = pd.DataFrame({"colour": ["red", "blue", "green", "red"] * 10, "size": [1.0, 2.0, 3.0, 4.0] * 10})
    frame["target"] = frame["size"] * 2
    train_and_publish(
        engine,
        settings,
        name="colours",
        frame=frame,
        target="target",
        algorithm="LinearRegression",
        task=ModelTask.regression,
    )


def _refused(r: httpx.Response) -> None:
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    assert set(r.json()) == {"error"}


def test_bad_ids_are_refused_and_fail_no_one_elses_request_in_the_same_batch(live_server: str, iris: None) -> None:
    good_user = paying_user(live_server, 100)
    bad_user = paying_user(live_server, 100)
    url = f"{live_server}/v2/models/iris-logistic/infer"
    bad_ids = ["x" * 65, "a\x00b", "\x00", "y" * 1000]

    def good(i: int) -> int:
        body = {"id": f"ok-{i}", "inputs": [GOOD_ROW]}
        return httpx.post(url, json=body, headers=good_user, timeout=60).status_code

    def bad(i: int) -> httpx.Response:
        body = {"id": bad_ids[i % len(bad_ids)], "inputs": [GOOD_ROW]}
        return httpx.post(url, json=body, headers=bad_user, timeout=60)

    with ThreadPoolExecutor(max_workers=16) as pool:
        goods = [pool.submit(good, i) for i in range(24)]
        bads = [pool.submit(bad, i) for i in range(24)]
        assert [f.result() for f in goods] == [200] * 24
        for f in bads:
            _refused(f.result())
    assert balance(live_server, good_user) == 100 - 24
    assert balance(live_server, bad_user) == 100


def test_versions_and_header_lengths_that_are_not_plain_numbers_are_refused(live_server: str, iris: None) -> None:
    headers = paying_user(live_server, 10)
    body = {"inputs": [GOOD_ROW]}
    for version in (str(2**31), str(2**63), str(2**64 + 1), "²", "0", "-1", "1e3", "1.5"):
        for suffix in ("infer", "ready", ""):
            path = f"/v2/models/iris-logistic/versions/{version}" + (f"/{suffix}" if suffix else "")
            method = "POST" if suffix == "infer" else "GET"
            r = httpx.request(method, f"{live_server}{path}", json=body, headers=headers)
            _refused(r)
    for header in ("²", "1e3", "-1", str(2**63), "99999999999999999999", "0x10"):
        r = httpx.post(
            f"{live_server}/v2/models/iris-logistic/infer",
            content=json.dumps(body).encode(),
            headers=[
                *headers.items(),
                ("Content-Type", "application/json"),
                ("Inference-Header-Content-Length", header.encode()),  # "²" as its UTF-8 bytes
            ],
        )
        _refused(r)
    assert balance(live_server, headers) == 10


def test_deeply_nested_data_is_refused(live_server: str, iris: None) -> None:
    headers = paying_user(live_server, 10)
    for depth in (5_000, 10_000, 100_000):
        nested = "[" * depth + "1" + "]" * depth
        body = '{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": ' + nested + "}]}"
        r = httpx.post(
            f"{live_server}/v2/models/iris-logistic/infer",
            content=body.encode(),
            headers={**headers, "Content-Type": "application/json"},
        )
        _refused(r)
    assert balance(live_server, headers) == 10


def test_text_that_cannot_be_stored_is_refused_before_billing(live_server: str, colours: None) -> None:
    headers = paying_user(live_server, 10)
    url = f"{live_server}/v2/models/colours/infer"

    def tensors(colour_json: str) -> bytes:
        return (
            '{"inputs": [{"name": "colour", "shape": [1], "datatype": "BYTES", "data": ['
            + colour_json
            + ']}, {"name": "size", "shape": [1], "datatype": "FP64", "data": [2.0]}]}'
        ).encode()

    for colour in ('"\\ud800"', '"red\\udc00"', '"r\\u0000d"', '"\\ud83d"'):
        r = httpx.post(url, content=tensors(colour), headers={**headers, "Content-Type": "application/json"})
        _refused(r)
    # The binary tensor extension: the same text as raw bytes (a surrogate encoded as UTF-8 is not UTF-8).
    for raw in (b"\xed\xa0\x80", b"r\x00d", b"\xff"):
        header = json.dumps(
            {
                "inputs": [
                    {
                        "name": "colour",
                        "shape": [1],
                        "datatype": "BYTES",
                        "parameters": {"binary_data_size": 4 + len(raw)},
                    },
                    {"name": "size", "shape": [1], "datatype": "FP64", "data": [2.0]},
                ]
            }
        ).encode()
        body = header + struct.pack("<I", len(raw)) + raw
        extra = {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}
        _refused(httpx.post(url, content=body, headers={**headers, **extra}))
    assert balance(live_server, headers) == 10
    ok = httpx.post(url, content=tensors('"red"'), headers={**headers, "Content-Type": "application/json"})
    assert ok.status_code == 200, ok.text
    history = httpx.get(f"{live_server}/api/v1/predictions", headers=headers).json()
    assert len(history) == 1
    r = httpx.get(f"{live_server}/api/v1/predictions/{history[0]['id']}/results.csv", headers=headers)
    assert r.status_code == 200 and "red" in r.text
