"""The sign-in cookie's rules: only a value this UI signed is read, codes work once, links stay inside the UI."""

from __future__ import annotations

import pytest

from web_ui.utils import browser_session


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLMARKET_UI_COOKIE_SECRET", "a secret for these tests only")


def test_only_a_value_this_ui_signed_gives_back_its_token() -> None:
    signed = browser_session.sign("header.payload.signature")
    assert browser_session.verify(signed) == "header.payload.signature"
    body, _, mac = signed.rpartition(".")
    assert browser_session.verify(f"{body}.{'0' * len(mac)}") is None
    assert browser_session.verify("header.payload.signature") is None
    assert browser_session.verify(None) is None and browser_session.verify("") is None


def test_a_parked_token_is_claimed_once() -> None:
    code = browser_session.park("the-token")
    assert browser_session.claim(code) == "the-token"
    assert browser_session.claim(code) is None
    assert browser_session.claim("made-up") is None


@pytest.mark.parametrize(
    ("asked", "kept"),
    [
        ("/wallet", "/wallet"),
        ("", "/"),
        ("https://elsewhere.example/", "/"),
        ("//elsewhere.example", "/"),
        ("/\\elsewhere", "/"),
    ],
)
def test_the_page_to_return_to_stays_inside_the_ui(asked: str, kept: str) -> None:
    assert browser_session.safe_next(asked) == kept
