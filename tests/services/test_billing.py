"""Serving and billing batches of synchronous inference: set-based, and every ledger rule per task."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session

from app.core.errors import InsufficientFunds, Unprocessable
from app.models.task import Task
from app.runtime.schema import Feature
from app.services import billing, ledger, predictions, tabular, users
from tests.concurrency import Tally, assert_ledger_verifies, hammer
from tests.http_clients import balance, paying_user

FEATURES = [Feature(name="x", type="number")]


class Doubling:
    def __init__(self) -> None:
        self.calls: list[int] = []

    def predict_columns(self, columns: dict[str, np.ndarray[Any, Any]], n: int) -> np.ndarray[Any, Any]:
        self.calls.append(n)
        return columns["x"] * 2


class Broken:
    def predict_columns(self, columns: dict[str, np.ndarray[Any, Any]], n: int) -> np.ndarray[Any, Any]:
        raise ValueError("this model is broken")


def _user(session: Session, credits: int) -> int:
    user = users.create_user(session, email=f"{uuid.uuid4().hex[:8]}@example.com", password="password-123")
    if credits:
        ledger.top_up(session, user_id=user.id or 0, amount=credits, idempotency_key=uuid.uuid4().hex)
    return user.id or 0


def _order(user_id: int, model: billing.Priced, predictor: Any, values: list[float], key: str = "m") -> billing.Order:
    return billing.Order(
        user_id=user_id,
        model=model,
        model_key=key,
        predictor=predictor,
        features=FEATURES,
        columns={"x": np.asarray(values, dtype=np.float64)},
        rows=len(values),
        request_id=None,
    )


@pytest.fixture
def priced(session: Session, publish_model: Callable[..., Any]) -> billing.Priced:
    model = publish_model("diabetes-linear", price=3)
    return billing.Priced(model.id, model.name, model.version, 3, model.owner_id)


def _statements(engine: Engine) -> tuple[list[str], Callable[[], None]]:
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement.split()[0].upper())

    event.listen(engine, "before_cursor_execute", count)
    return seen, lambda: event.remove(engine, "before_cursor_execute", count)


def test_a_batch_is_served_with_one_predict_and_billed_like_single_requests(
    engine: Engine, session: Session, priced: billing.Priced
) -> None:
    rich, poor = _user(session, 100), _user(session, 4)
    model = Doubling()
    orders = [
        _order(rich, priced, model, [1.0, 2.0]),  # 6 credits
        _order(poor, priced, model, [3.0]),  # 3 of 4
        _order(poor, priced, model, [4.0]),  # refused: 1 credit left
        _order(rich, priced, model, [5.0]),
    ]
    out = billing.serve_and_bill(engine, orders, author_share_percent=70)

    assert model.calls == [4]  # one predict for the rows that were paid for; none for the refused order
    assert isinstance(out[2], InsufficientFunds) and (out[2].need, out[2].have) == (3, 1)
    bills = [b for b in out if isinstance(b, billing.Bill)]
    assert [b.predictions.tolist() for b in bills] == [[2.0, 4.0], [6.0], [10.0]]
    assert [b.cost for b in bills] == [6, 3, 3]
    with Session(engine) as s:
        assert ledger.balance_of(s, rich) == 100 - 9
        assert ledger.balance_of(s, poor) == 1
        assert ledger.balance_of(s, priced.owner_id or 0) == 6 * 70 // 100 + 2 * (3 * 70 // 100)
        task = s.get(Task, bills[0].task_id)
        assert task is not None and task.status == "succeeded"
        assert predictions.aligned_results(task) == [2.0, 4.0]
        assert tabular.unpack_lists(task.inputs) == {"x": [1.0, 2.0]}
        report = ledger.verify(s)
    assert report.ok, report


def test_the_statements_do_not_grow_with_the_batch(engine: Engine, session: Session, priced: billing.Priced) -> None:
    payers = [_user(session, 1000) for _ in range(3)]
    counts = []
    for size in (3, 60):
        seen, stop = _statements(engine)
        orders = [_order(payers[i % 3], priced, Doubling(), [float(i)]) for i in range(size)]
        out = billing.serve_and_bill(engine, orders, author_share_percent=70)
        stop()
        assert all(isinstance(b, billing.Bill) for b in out)
        counts.append(Counter(seen))
    assert counts[0] == counts[1]
    # the locking read, then the writes: one statement on PostgreSQL; on SQLite one per table and per account
    assert counts[1]["SELECT"] == 1 and counts[1]["INSERT"] + counts[1]["WITH"] in (1, 3), counts[1]
    assert counts[1]["UPDATE"] <= 5, counts[1]  # at most one per account: 3 payers, the author, the platform
    with Session(engine) as s:
        assert ledger.verify(s).ok


def test_a_failing_model_fails_its_orders_alone_and_moves_no_money(
    engine: Engine, session: Session, priced: billing.Priced
) -> None:
    payer = _user(session, 50)
    orders = [
        _order(payer, priced, Broken(), [1.0], key="broken"),
        _order(payer, priced, Doubling(), [2.0], key="good"),
    ]
    out = billing.serve_and_bill(engine, orders, author_share_percent=70)
    assert isinstance(out[0], Unprocessable) and "broken" in out[0].detail
    assert isinstance(out[1], billing.Bill)
    with Session(engine) as s:
        assert ledger.balance_of(s, payer) == 47
        assert ledger.verify(s).ok


# -- over HTTP, under load -------------------------------------------------------------------------------


ROW = [0.03, 0.05, 0.06, 0.02, -0.04, -0.03, -0.04, 0.0, 0.02, -0.02]
BODY = {"inputs": [{"name": "x", "shape": [1, 10], "datatype": "FP64", "data": ROW}]}


def test_64_clients_bill_concurrently_for_seconds_and_the_ledger_verifies(
    db_backend: str, database_url: str, live_server: str, publish_model: Callable[..., Any], tmp_path: Path
) -> None:
    if db_backend != "postgresql":
        pytest.skip("the concurrency test runs on PostgreSQL (SQLite serialises writers by design)")
    publish_model("diabetes-linear", price=2)
    url = "/v2/models/diabetes-linear/infer"
    # 16 payers shared by 64 clients; a quarter of them can pay for only a few rows and run dry mid-way.
    payers = [paying_user(live_server, 3 if i % 4 == 0 else 100_000) for i in range(16)]
    stop_at = time.monotonic() + 4.0
    tally: Tally[tuple[int, int]] = Tally()

    def client(k: int, http: httpx.Client) -> None:
        headers = payers[k % 16]
        while time.monotonic() < stop_at:
            r = http.post(url, json=BODY, headers=headers)
            assert r.status_code in (200, 402), r.text
            tally.add((k % 16, r.status_code))

    hammer(live_server, 64, client)
    outcomes = tally.counts

    for i, headers in enumerate(payers):
        paid = outcomes[(i, 200)]
        start = 3 if i % 4 == 0 else 100_000
        assert balance(live_server, headers) == start - 2 * paid
        if i % 4 == 0 and outcomes[(i, 402)]:
            assert paid == 1  # 3 credits pay for exactly 1 row at 2, then every call is refused
    assert sum(n for (_, status), n in outcomes.items() if status == 402) > 0
    served = sum(n for (_, status), n in outcomes.items() if status == 200)
    print(f"64 clients for 4 s: {served} billed requests, {served / 4:.0f}/s")
    assert served > 100
    assert_ledger_verifies(database_url, tmp_path)


def test_a_poisoned_request_in_a_busy_batch_fails_alone(
    live_server: str, publish_model: Callable[..., Any], engine: Engine
) -> None:
    publish_model("diabetes-linear", price=1)
    url = f"{live_server}/v2/models/diabetes-linear/infer"
    headers = paying_user(live_server, 1000)
    poisoned: list[bytes] = [
        b'{"id": "'
        + b"x" * 65
        + b'", "inputs": [{"name": "x", "shape": [1, 10], "datatype": "FP64", "data": '
        + str(ROW).encode()
        + b"}]}",
        b'{"id": "a\\u0000b", "inputs": [{"name": "x", "shape": [1, 10], "datatype": "FP64", "data": '
        + str(ROW).encode()
        + b"}]}",
        b'{"id": "\\ud800", "inputs": [{"name": "x", "shape": [1, 10], "datatype": "FP64", "data": '
        + str(ROW).encode()
        + b"}]}",
        b'{"inputs": [{"name": "x", "shape": [1, 10], "datatype": "FP64", "data": [1e309, 0, 0, 0, 0, 0, 0, 0, 0]}]}',
        b'{"inputs": [{"name": "x", "shape": [1, 10], "datatype": "FP64", "data": '
        + b"[" * 10_000
        + b"]" * 10_000
        + b"}]}",
        b'{"inputs": [{"name": "x", "shape": [9223372036854775808, 10], "datatype": "FP64", "data": [1]}]}',
    ]

    def good(i: int) -> int:
        body = {"id": f"good-{i}", **BODY}
        return httpx.post(url, json=body, headers=headers, timeout=60).status_code

    def bad(body: bytes) -> tuple[int, Any]:
        r = httpx.post(url, content=body, headers={**headers, "Content-Type": "application/json"}, timeout=60)
        return r.status_code, r.json()

    with ThreadPoolExecutor(max_workers=32) as pool:
        goods = [pool.submit(good, i) for i in range(48)]
        bads = [pool.submit(bad, body) for body in poisoned]
        good_codes = [f.result() for f in goods]
        bad_answers = [f.result() for f in bads]
    assert good_codes == [200] * 48
    for status, body in bad_answers:
        assert status == 400 and set(body) == {"error"}, (status, body)
    assert balance(live_server, headers) == 1000 - 48
    with Session(engine) as s:
        count = s.execute(sa.select(sa.func.count()).select_from(Task)).scalar_one()
        assert count == 48
        assert ledger.verify(s).ok
