"""The admin page: users with balances, crediting a user, the ledger check, workers. Only for admins."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from streamlit.testing.v1 import AppTest

from tests.web_ui.conftest import LiveApi, Person, no_exceptions, texts


def test_clients_get_no_admin_page(app_as: Callable[..., AppTest], make_person: Callable[..., Person]) -> None:
    at = app_as(make_person())
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        at.switch_page("app_pages/admin.py")


def test_admin_sees_users_and_credits_one(
    app_as: Callable[..., AppTest], admin: Person, make_person: Callable[..., Person], live_api: LiveApi
) -> None:
    person = make_person(credits=5)
    at = app_as(admin, "app_pages/admin.py")
    no_exceptions(at)
    users = at.dataframe[0].value
    row = users[users["email"] == person.email].iloc[0]
    assert (row["role"], row["balance"]) == ("client", 5)

    at.selectbox(key="credit_user").select(person.user["id"]).run()
    assert next(m.value for m in at.metric if m.label == "Their balance now") == "5 credits"
    at.number_input(key="credit_amount").set_value(75).run()
    at.text_input(key="credit_memo").input("welcome gift")
    at.button(key="credit_button").click()
    at.run()
    no_exceptions(at)
    credited = f"Credited 75 credits to {person.email}. Their balance is now 80 credits."
    assert credited in [s.value for s in at.success]
    entries = live_api.call("GET", "/wallet/ledger", person.token)
    assert (entries[0]["kind"], entries[0]["amount"], entries[0]["memo"]) == ("admin_credit", 75, "welcome gift")
    # The picker shows the balance as it is now.
    assert next(m.value for m in at.metric if m.label == "Their balance now") == "80 credits"


def test_admin_credit_refuses_a_zero_or_negative_amount_in_words(app_as: Callable[..., AppTest], admin: Person) -> None:
    at = app_as(admin, "app_pages/admin.py")
    at.number_input(key="credit_amount").set_value(-5).run()
    assert [e.value for e in at.error] == ["Enter at least 1 credit (-5 cannot be added)."]
    assert at.button(key="credit_button").disabled


def test_admin_sees_the_ledger_verified_and_the_workers(app_as: Callable[..., AppTest], admin: Person) -> None:
    at = app_as(admin, "app_pages/admin.py")
    no_exceptions(at)
    assert any(s.value.startswith("The ledger balances:") for s in at.success)
    assert "Credits minted" in texts(at)
    # The embedded default runs one worker inside the API; it reports its heartbeat.
    workers = at.dataframe[-1].value
    assert len(workers) >= 1 and "tasks.predict" in workers["queues"].iloc[0]


def test_admin_sees_the_queue_depth_next_to_the_workers(app_as: Callable[..., AppTest], admin: Person) -> None:
    at = app_as(admin, "app_pages/admin.py")
    no_exceptions(at)
    # The embedded default's queues are in memory and drained by its worker: nothing waits, nothing is dead.
    page = texts(at)
    for label in ("Ready", "Retrying", "Dead-lettered", "Outbox unsent"):
        assert label in page
    assert "Broker: embedded." in page
    queues = next(d.value for d in at.dataframe if "retrying" in d.value.columns)
    assert list(queues["queue"]) == ["tasks.predict", "tasks.train"]
    assert set(queues.columns) == {"queue", "ready", "retrying", "dead"}
    assert list(queues["dead"]) == ["0", "0"]
