"""Signing in, registering, signing out, and an expired session, through the UI against the live API."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

import httpx
from streamlit.testing.v1 import AppTest

from tests.web_ui.conftest import PASSWORD, LiveApi, Person, new_app, no_exceptions, texts
from web_ui.utils import messages
from web_ui.utils.api import ApiError


def sign_in_form(at: AppTest, email: str, password: str) -> AppTest:
    at.text_input(key="sign_in_email").input(email)
    at.text_input(key="sign_in_password").input(password)
    return _submit(at, "Sign in")


def _submit(at: AppTest, label: str) -> AppTest:
    next(b for b in at.button if b.label == label).click()
    return at.run()


def test_signed_out_visitor_sees_only_the_sign_in_page(live_api: LiveApi) -> None:
    at = new_app().run()
    no_exceptions(at)
    assert "mlmarket" in at.title[0].value
    assert [t.label for t in at.tabs] == ["Sign in", "Create an account"]
    assert "token" not in at.session_state


def test_a_wrong_password_reads_as_a_sentence(live_api: LiveApi, make_person: Callable[..., Person]) -> None:
    person = make_person()
    at = new_app().run()
    at.text_input(key="sign_in_email").input(person.email)
    at.text_input(key="sign_in_password").input("not the password")
    _submit(at, "Sign in")
    no_exceptions(at)
    assert [e.value for e in at.error] == ["Wrong email or password."]
    assert "token" not in at.session_state


def test_sign_in_checks_the_email_and_password_before_asking_the_api(live_api: LiveApi) -> None:
    at = new_app().run()
    sign_in_form(at, "nobody-at-example.com", "")
    no_exceptions(at)
    assert [e.value for e in at.error] == [
        "An email address has an @, like `name@example.com`.",
        "Enter your password.",
    ]
    sign_in_form(at, "someone@example.com", "short")
    assert [e.value for e in at.error] == ["mlmarket passwords have at least 8 characters."]
    assert "token" not in at.session_state


def test_too_many_failed_sign_ins_say_when_to_try_again(live_api: LiveApi, make_person: Callable[..., Person]) -> None:
    person = make_person()
    for _ in range(20):  # the throttle's limit, whatever it is set to, is reached well before this
        answer = httpx.post(
            f"{live_api.url}/api/v1/auth/token", data={"username": person.email, "password": "not the password"}
        )
        if answer.status_code == 429:
            break
    assert answer.status_code == 429, answer.text
    at = new_app().run()
    sign_in_form(at, person.email, person.password)
    no_exceptions(at)
    (error,) = [e.value for e in at.error]
    assert re.fullmatch(
        r"Too many failed sign-ins for this email from your address\. Try again in \d+ (seconds?|minutes?)\.", error
    ), error
    assert "token" not in at.session_state


def test_signing_in_opens_the_marketplace(live_api: LiveApi, make_person: Callable[..., Person]) -> None:
    person = make_person()
    at = new_app().run()
    at.text_input(key="sign_in_email").input(person.email)
    at.text_input(key="sign_in_password").input(person.password)
    _submit(at, "Sign in")
    no_exceptions(at)
    assert at.session_state["user"]["email"] == person.email
    assert "Marketplace" in at.title[0].value
    assert "iris-logistic" in texts(at)


def test_registering_signs_the_new_person_in(live_api: LiveApi) -> None:
    email = f"new-{uuid.uuid4().hex[:8]}@example.com"
    at = new_app().run()
    at.text_input(key="register_email").input(email)
    at.text_input(key="register_name").input("Ada Lovelace")
    at.text_input(key="register_password").input(PASSWORD)
    at.text_input(key="register_repeat").input(PASSWORD)
    _submit(at, "Create my account")
    no_exceptions(at)
    assert at.session_state["user"]["email"] == email
    assert "Ada Lovelace" in "\n".join(m.value for m in at.sidebar.markdown)


def register_form(at: AppTest, email: str, password: str, repeated: str | None = None) -> AppTest:
    at.text_input(key="register_email").input(email)
    at.text_input(key="register_password").input(password)
    at.text_input(key="register_repeat").input(password if repeated is None else repeated)
    return _submit(at, "Create my account")


def test_a_taken_email_offers_to_sign_in_instead(live_api: LiveApi, make_person: Callable[..., Person]) -> None:
    person = make_person()
    at = new_app().run()
    register_form(at, person.email, "another password")
    no_exceptions(at)
    assert [e.value for e in at.error] == ["This email already has an account. Sign in instead."]
    at.button(key="sign_in_instead").click().run()
    no_exceptions(at)
    assert at.session_state["auth_tab"] == "Sign in"
    assert at.text_input(key="sign_in_email").value == person.email
    assert not at.error
    at.text_input(key="sign_in_password").input(person.password)
    _submit(at, "Sign in")
    no_exceptions(at)
    assert at.session_state["user"]["email"] == person.email


def test_registering_checks_the_email_and_password_before_asking_the_api(live_api: LiveApi) -> None:
    email = f"short-{uuid.uuid4().hex[:8]}@example.com"
    at = new_app().run()
    register_form(at, "not-an-email", "short")
    no_exceptions(at)
    assert [e.value for e in at.error] == [
        "An email address has an @, like `name@example.com`.",
        "The password needs at least 8 characters (this one has 5).",
    ]
    register_form(at, email, PASSWORD, repeated=PASSWORD + "!")
    assert [e.value for e in at.error] == ["The two passwords differ."]
    register_form(at, "name@example", PASSWORD)
    assert [e.value for e in at.error] == ["This is not an email address: it should read like `name@example.com`."]
    assert "token" not in at.session_state
    # None of these reached the API: the email is still free.
    created = httpx.post(f"{live_api.url}/api/v1/auth/register", json={"email": email, "password": PASSWORD})
    assert created.status_code == 201, created.text


def test_an_email_the_api_refuses_is_said_in_a_sentence(live_api: LiveApi) -> None:
    at = new_app().run()
    register_form(at, "two..dots@example.com", PASSWORD)
    no_exceptions(at)
    assert [e.value for e in at.error] == [
        "The email is not a valid email address: an email address cannot have two periods in a row."
    ]
    assert "token" not in at.session_state


def test_any_api_detail_becomes_a_sentence() -> None:
    assert messages.describe("incorrect email or password") == "Incorrect email or password."
    assert messages.describe(ApiError(0, "the API did not answer in time; please try again")) == (
        "The API did not answer in time; please try again."
    )
    pydantic_style = "email: value is not a valid email address: An email address must have an @-sign."
    assert messages.describe(ApiError(422, pydantic_style)) == (
        "The email is not a valid email address: an email address must have an @-sign."
    )
    two_fields = "monthly_spend_limit: Input should be greater than or equal to 0; name: Field required"
    assert messages.describe(ApiError(422, two_fields), {"name": "the key's name"}) == (
        "The monthly spend limit must be at least 0. The key's name is missing."
    )
    structured = ApiError(
        422,
        "password: String should have at least 8 characters",
        {"errors": [{"loc": ["body", "password"], "msg": "String should have at least 8 characters"}]},
    )
    assert messages.describe(structured) == "The password needs at least 8 characters."
    assert messages.describe(ApiError(422, "expires_at must be in the future"), {"expires_at": "the expiry"}) == (
        "The expiry must be in the future."
    )
    assert messages.describe(ApiError(404, "Not Found?")) == "Not Found?"


def test_signing_out_forgets_the_token(app_as: Callable[..., AppTest], make_person: Callable[..., Person]) -> None:
    at = app_as(make_person(), "app_pages/sign_out.py")
    no_exceptions(at)
    assert "token" not in at.session_state
    assert [i.value for i in at.info] == ["You are signed out."]
    assert [t.label for t in at.tabs] == ["Sign in", "Create an account"]


def test_an_expired_token_sends_the_person_back_to_sign_in(
    app_as: Callable[..., AppTest], make_person: Callable[..., Person]
) -> None:
    person = make_person()
    at = new_app()
    at.session_state["token"] = person.token + "tampered"
    at.session_state["user"] = person.user
    at.run()
    no_exceptions(at)
    assert "token" not in at.session_state
    assert [w.value for w in at.warning] == ["Your session has expired, please sign in again"]
    assert [t.label for t in at.tabs] == ["Sign in", "Create an account"]
