"""Signing in, registering, signing out, and an expired session, through the UI against the live API."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from streamlit.testing.v1 import AppTest

from tests.web_ui.conftest import PASSWORD, LiveApi, Person, new_app, no_exceptions, texts


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


def test_a_wrong_password_shows_the_apis_words(live_api: LiveApi, make_person: Callable[..., Person]) -> None:
    person = make_person()
    at = new_app().run()
    at.text_input(key="sign_in_email").input(person.email)
    at.text_input(key="sign_in_password").input("not the password")
    _submit(at, "Sign in")
    no_exceptions(at)
    assert [e.value for e in at.error] == ["incorrect email or password"]
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


def test_registering_a_taken_email_or_a_short_password_says_why(
    live_api: LiveApi, make_person: Callable[..., Person]
) -> None:
    person = make_person()
    at = new_app().run()
    at.text_input(key="register_email").input(person.email)
    at.text_input(key="register_password").input(PASSWORD)
    at.text_input(key="register_repeat").input(PASSWORD)
    _submit(at, "Create my account")
    assert len(at.error) == 1 and "already exists" in at.error[0].value
    at.text_input(key="register_email").input("someone-else@example.com")
    at.text_input(key="register_password").input("short")
    at.text_input(key="register_repeat").input("short")
    _submit(at, "Create my account")
    assert [e.value for e in at.error] == ["The password needs at least 8 characters."]
    at.text_input(key="register_email").input("not-an-email")
    at.text_input(key="register_password").input(PASSWORD)
    at.text_input(key="register_repeat").input(PASSWORD)
    _submit(at, "Create my account")
    no_exceptions(at)
    assert len(at.error) == 1 and "email" in at.error[0].value
    assert "token" not in at.session_state


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
