"""The byte-level scan that refuses JSON escaping a NUL or a lone surrogate, and passes everything else."""

from __future__ import annotations

import json

import pytest

from app.api.text_guard import json_has_unstorable_text, unstorable_text


@pytest.mark.parametrize(
    "value",
    ["a\x00b", "\x00", "\ud800", "x\udbff", "\udc00", "\udfff tail", "\ud800\ud800\udc00", "ok\udc00\ud800"],
)
def test_nul_and_lone_surrogates_are_found_wherever_they_are(value: str) -> None:
    for document in ({"k": value}, [1, value], {value: 1}, {"deep": [[{"x": [value]}]]}):
        assert json_has_unstorable_text(json.dumps(document).encode())
    assert unstorable_text(value)


@pytest.mark.parametrize(
    "value", ["plain", "caf\u00e9", "\U0001f600 pair", "\\u0000 as text", "\\\\u0000", "\t\n", "\u2028", "é\\"]
)
def test_ordinary_text_and_escaped_backslashes_pass(value: str) -> None:
    for ascii_only in (True, False):
        document = json.dumps({"k": value, value: [value]}, ensure_ascii=ascii_only).encode()
        assert not json_has_unstorable_text(document)
    assert not unstorable_text(value)


def test_a_literal_backslash_before_u0000_is_text_not_an_escape() -> None:
    assert not json_has_unstorable_text(b'{"k": "\\\\u0000"}')
    assert json_has_unstorable_text(b'{"k": "\\\\\\u0000"}')  # an escaped backslash, then a real escape
    assert json_has_unstorable_text(b'{"k": "\\ud83d\\u0041"}')  # a high surrogate followed by no low one
    assert not json_has_unstorable_text(b'{"k": "\\ud83d\\ude00"}')  # a proper pair
