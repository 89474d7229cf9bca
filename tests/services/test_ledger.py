from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlmodel import Session

from app.core.errors import InsufficientFunds, NotFound, Unprocessable
from app.models.user import User
from app.services import ledger, users


def new_user(session: Session, email: str | None = None) -> User:
    return users.create_user(session, email=email or f"{uuid.uuid4().hex[:8]}@example.com", password="password-1")


def uid(user: User) -> int:
    assert user.id is not None
    return user.id


def test_charge_refund_and_settle_move_exact_amounts(session: Session) -> None:
    payer, author = new_user(session), new_user(session)
    ledger.top_up(session, user_id=uid(payer), amount=100, idempotency_key="k")
    ledger.charge(session, user_id=uid(payer), amount=30, task_id="t1")
    ledger.charge(session, user_id=uid(payer), amount=11, task_id="t2")
    session.commit()
    assert ledger.balance_of(session, uid(payer)) == 59

    assert ledger.settle(session, task_id="t1", author_user_id=uid(author), author_share_percent=70) is True
    assert ledger.refund(session, task_id="t2") is True
    session.commit()
    assert ledger.balance_of(session, uid(payer)) == 70
    assert ledger.balance_of(session, uid(author)) == 21
    platform = session.execute(sa.text("SELECT balance FROM accounts WHERE name = 'platform'")).scalar_one()
    assert platform == 9

    report = ledger.verify(session)
    assert report.ok, report
    assert report.total_minted == 100 == report.total_balance


def test_a_task_is_refunded_or_settled_exactly_once(session: Session) -> None:
    payer, author = new_user(session), new_user(session)
    ledger.top_up(session, user_id=uid(payer), amount=50, idempotency_key="k")
    ledger.charge(session, user_id=uid(payer), amount=50, task_id="t")
    session.commit()
    assert ledger.refund(session, task_id="t") is True
    assert ledger.refund(session, task_id="t") is False
    assert ledger.settle(session, task_id="t", author_user_id=uid(author), author_share_percent=70) is False
    session.commit()
    assert ledger.balance_of(session, uid(payer)) == 50
    assert ledger.balance_of(session, uid(author)) == 0
    assert ledger.verify(session).ok
    with pytest.raises(NotFound):
        ledger.refund(session, task_id="never-charged")


def test_insufficient_funds_names_need_and_have_and_moves_nothing(session: Session) -> None:
    payer = new_user(session)
    ledger.top_up(session, user_id=uid(payer), amount=12, idempotency_key="k")
    with pytest.raises(InsufficientFunds, match="insufficient balance: need 30, have 12"):
        ledger.charge(session, user_id=uid(payer), amount=30, task_id="t")
    session.rollback()
    assert ledger.balance_of(session, uid(payer)) == 12
    assert len(ledger.list_entries(session, user_id=uid(payer), limit=10, offset=0)) == 1


def test_a_task_cannot_be_charged_twice(session: Session) -> None:
    payer = new_user(session)
    ledger.top_up(session, user_id=uid(payer), amount=100, idempotency_key="k")
    ledger.charge(session, user_id=uid(payer), amount=10, task_id="t")
    session.commit()
    with pytest.raises(IntegrityError):
        ledger.charge(session, user_id=uid(payer), amount=10, task_id="t")
    session.rollback()
    assert ledger.balance_of(session, uid(payer)) == 90


def test_non_positive_amounts_are_refused(session: Session) -> None:
    payer = new_user(session)
    for amount in (0, -1):
        with pytest.raises(Unprocessable):
            ledger.top_up(session, user_id=uid(payer), amount=amount, idempotency_key=f"k{amount}")
        with pytest.raises(Unprocessable):
            ledger.charge(session, user_id=uid(payer), amount=amount, task_id=f"t{amount}")


def test_ledger_entries_cannot_be_updated_or_deleted(engine: Engine, session: Session) -> None:
    payer = new_user(session)
    ledger.top_up(session, user_id=uid(payer), amount=5, idempotency_key="k")
    session.commit()
    for statement in ("UPDATE ledger_entries SET amount = 500", "DELETE FROM ledger_entries"):
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(sa.text(statement))
    assert ledger.balance_of(session, uid(payer)) == 5


def test_the_balance_check_constraint_holds_even_for_raw_sql(engine: Engine, session: Session) -> None:
    new_user(session)
    session.commit()
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(sa.text("UPDATE accounts SET balance = -1"))


def test_verify_catches_a_tampered_balance(engine: Engine, session: Session) -> None:
    payer = new_user(session)
    ledger.top_up(session, user_id=uid(payer), amount=5, idempotency_key="k")
    session.commit()
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE accounts SET balance = balance + 1 WHERE user_id = :u"), {"u": uid(payer)})
    report = ledger.verify(session)
    assert not report.ok
    assert [m.balance - m.entries_sum for m in report.mismatches] == [1]


def _postgres_only(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("real concurrency is checked on PostgreSQL; SQLite serialises every writer")


def test_fifty_concurrent_charges_never_overdraw(engine: Engine, session: Session) -> None:
    _postgres_only(engine)
    payer = new_user(session)
    ledger.top_up(session, user_id=uid(payer), amount=100, idempotency_key="k")
    session.commit()
    start = threading.Barrier(50)
    stop = threading.Event()
    lowest: list[int] = []

    def charge_once(i: int) -> str:
        with Session(engine) as s:
            start.wait()
            try:
                ledger.charge(s, user_id=uid(payer), amount=3, task_id=f"task-{i}")
                s.commit()
                return "charged"
            except InsufficientFunds:
                s.rollback()
                return "refused"

    def watch_balance() -> None:
        with engine.connect() as conn:
            while not stop.is_set():
                lowest.append(
                    conn.execute(
                        sa.text("SELECT balance FROM accounts WHERE user_id = :u"), {"u": uid(payer)}
                    ).scalar_one()
                )
                conn.rollback()

    watcher = threading.Thread(target=watch_balance)
    watcher.start()
    with ThreadPoolExecutor(max_workers=50) as pool:
        outcomes = list(pool.map(charge_once, range(50)))
    stop.set()
    watcher.join()

    assert outcomes.count("charged") == 33
    assert outcomes.count("refused") == 17
    assert ledger.balance_of(session, uid(payer)) == 1
    assert min(lowest) >= 0
    report = ledger.verify(session)
    assert report.ok, report
    assert report.total_held == 99


def test_concurrent_retries_of_one_top_up_credit_once(engine: Engine, session: Session) -> None:
    _postgres_only(engine)
    payer = new_user(session)
    start = threading.Barrier(20)

    def attempt(_: int) -> int:
        with Session(engine) as s:
            start.wait()
            credited = ledger.top_up(s, user_id=uid(payer), amount=25, idempotency_key="same-key")
            assert credited.entry.id is not None
            return credited.entry.id

    with ThreadPoolExecutor(max_workers=20) as pool:
        entry_ids = set(pool.map(attempt, range(20)))
    assert len(entry_ids) == 1
    assert ledger.balance_of(session, uid(payer)) == 25
    assert ledger.verify(session).ok


operations = st.lists(
    st.one_of(
        st.tuples(st.just("top_up"), st.integers(0, 2), st.integers(1, 500)),
        st.tuples(st.just("charge"), st.integers(0, 2), st.integers(1, 300)),
        st.tuples(st.just("refund"), st.integers(0, 30), st.just(0)),
        st.tuples(st.just("settle"), st.integers(0, 30), st.integers(0, 100)),
    ),
    max_size=25,
)


@hyp_settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
def test_any_sequence_of_operations_keeps_the_ledger_consistent(
    session: Session, ops: list[tuple[str, int, int]]
) -> None:
    # Hypothesis reuses the fixture's database across examples: the ledger keeps growing, and must stay consistent.
    if "people" not in session.info:
        session.info["people"] = [new_user(session) for _ in range(3)]
    people = session.info["people"]
    tasks: list[str] = []
    for op, who, amount in ops:
        if op == "top_up":
            ledger.top_up(session, user_id=uid(people[who]), amount=amount, idempotency_key=uuid.uuid4().hex)
        elif op == "charge":
            task_id = uuid.uuid4().hex
            try:
                ledger.charge(session, user_id=uid(people[who]), amount=amount, task_id=task_id)
                session.commit()
                tasks.append(task_id)
            except InsufficientFunds:
                session.rollback()
        elif tasks:
            task_id = tasks[who % len(tasks)]
            if op == "refund":
                ledger.refund(session, task_id=task_id)
            else:
                ledger.settle(
                    session, task_id=task_id, author_user_id=uid(people[who % 3]), author_share_percent=amount
                )
            session.commit()
        for person in people:
            assert ledger.balance_of(session, uid(person)) >= 0
    report = ledger.verify(session)
    assert report.ok, report
    assert report.total_minted == report.total_balance + report.total_held
