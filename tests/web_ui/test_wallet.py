"""The wallet page: balance, top-ups with a fresh idempotency key per click, the ledger and its chart."""

from __future__ import annotations

from collections.abc import Callable

from streamlit.testing.v1 import AppTest

from tests.web_ui.conftest import LiveApi, Person, no_exceptions, texts


def balance_shown(at: AppTest) -> str:
    return next(m.value for m in at.metric if m.label == "Balance")


def test_the_wallet_shows_the_balance_and_the_ledger(
    app_as: Callable[..., AppTest], make_person: Callable[..., Person]
) -> None:
    at = app_as(make_person(credits=40), "app_pages/wallet.py")
    no_exceptions(at)
    assert balance_shown(at) == "40 credits"
    ledger = at.dataframe[0].value
    assert list(ledger["what"]) == ["Top-up"]
    assert list(ledger["amount"]) == [40]
    assert "Balance over time" in texts(at)


def test_each_top_up_click_credits_once(
    app_as: Callable[..., AppTest], make_person: Callable[..., Person], live_api: LiveApi
) -> None:
    person = make_person()
    at = app_as(person, "app_pages/wallet.py")
    assert "No movements yet" in texts(at)
    at.number_input(key="top_up_amount").set_value(250).run()
    at.button(key="top_up_button").click()
    at.run()
    no_exceptions(at)
    assert [s.value for s in at.success] == ["Added 250 credits. New balance: 250 credits."]
    assert balance_shown(at) == "250 credits"
    assert "Balance: **250 credits**" in "\n".join(m.value for m in at.sidebar.markdown)

    # The same amount again is a new top-up, not a replay of the first; the first banner is gone.
    at.button(key="top_up_button").click()
    at.run()
    assert [s.value for s in at.success] == ["Added 250 credits. New balance: 500 credits."]
    assert balance_shown(at) == "500 credits"
    assert list(at.dataframe[0].value["balance after"]) == [500, 250]
    assert live_api.call("GET", "/wallet", person.token)["balance"] == 500


def test_an_amount_below_one_is_refused_next_to_the_field(
    app_as: Callable[..., AppTest], make_person: Callable[..., Person]
) -> None:
    at = app_as(make_person(), "app_pages/wallet.py")
    for amount, words in (
        (0, "Enter at least 1 credit (0 cannot be added)."),
        (-5, "Enter at least 1 credit (-5 cannot be added)."),
    ):
        at.number_input(key="top_up_amount").set_value(amount).run()
        no_exceptions(at)
        assert [e.value for e in at.error] == [words]
        assert at.button(key="top_up_button").disabled
    at.number_input(key="top_up_amount").set_value(40).run()
    assert not at.error and at.button(key="top_up_button").label == "Add 40 credits"
