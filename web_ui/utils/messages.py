"""Words for the person: any answer of the API as a sentence, and the checks a form makes before it calls the API.

The API words its errors for programs: lower case, no full stop, and a refused field as ``field: message``
(``email: value is not a valid email address: ...``). :func:`describe` turns any of these into sentences a
person reads ("The email is not a valid email address: an email address must have an @-sign."), using the
field-by-field ``errors`` a 422 answer carries when there are some.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from web_ui.utils.api import ApiError

MIN_PASSWORD = 8  # what the API asks of a new password
MAX_PASSWORD = 128
# Something@something.something: the API checks the rest; this catches a typo before any request.
_EMAIL_SHAPE = re.compile(r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)+$")
_LOCATIONS = {"body", "query", "path", "header", "form", "cookie"}
_FIELD_DETAIL = re.compile(r"^(?P<field>[A-Za-z_][\w]*(\.[\w]+)*): (?P<message>.+)$", re.DOTALL)
_WAIT = re.compile(r"try again in (?P<seconds>\d+) seconds?", re.IGNORECASE)


# -- sentences --------------------------------------------------------------------------------------------


def _upper_first(text: str) -> str:
    return text[:1].upper() + text[1:]


def _lower_first(text: str) -> str:
    """'An email address …' → 'an email address …', but 'API' stays 'API'."""
    if len(text) > 1 and text[1].isupper():
        return text
    return text[:1].lower() + text[1:]


def sentence(text: Any) -> str:
    """``text`` as a sentence: one line, a capital first, a full stop last (unless it ends with ! or ?)."""
    words = " ".join(str(text or "").split())
    if not words:
        return ""
    words = _upper_first(words)
    return words if words[-1] in ".!?" else words + "."


def _with_labels(text: str, labels: Mapping[str, str]) -> str:
    """Field names the API used in free text (``expires_at must be …``) in the page's words."""
    for name, label in labels.items():
        text = re.sub(rf"\b{re.escape(name)}\b", label, text)
    return text


def field_label(loc: Sequence[Any] | str, labels: Mapping[str, str] | None = None) -> str:
    """What a person calls a field: the page's label for it, else its name in words ('the full name')."""
    labels = labels or {}
    parts = [str(p) for p in (loc.split(".") if isinstance(loc, str) else loc) if str(p) not in _LOCATIONS]
    if not parts:
        return "the request"
    for candidate in (".".join(parts), parts[-1]):
        if candidate in labels:
            return labels[candidate]
    words = [f"#{int(p) + 1}" if p.isdigit() else p.replace("_", " ") for p in parts]
    return "the " + " ".join(words)


_FIELD_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^field required$", re.IGNORECASE), "{field} is missing"),
    (re.compile(r"^value is not a valid email address: (?P<rest>.+)$", re.IGNORECASE | re.DOTALL),
     "{field} is not a valid email address: {rest}"),
    (re.compile(r"^value is not a valid email address$", re.IGNORECASE), "{field} is not a valid email address"),
    (re.compile(r"^string should have at least (?P<rest>\d+) characters?$", re.IGNORECASE),
     "{field} needs at least {rest} characters"),
    (re.compile(r"^string should have at most (?P<rest>\d+) characters?$", re.IGNORECASE),
     "{field} can have at most {rest} characters"),
    (re.compile(r"^input should be greater than or equal to (?P<rest>.+)$", re.IGNORECASE),
     "{field} must be at least {rest}"),
    (re.compile(r"^input should be less than or equal to (?P<rest>.+)$", re.IGNORECASE),
     "{field} must be at most {rest}"),
    (re.compile(r"^input should be (?P<rest>.+)$", re.IGNORECASE), "{field} should be {rest}"),
    (re.compile(r"^value error, (?P<rest>.+)$", re.IGNORECASE | re.DOTALL), "{rest}"),
]  # fmt: skip


def field_sentence(field: str, message: str) -> str:
    """One refused field as a sentence: ('the email', 'Field required') → 'The email is missing.'."""
    message = " ".join(str(message).split())
    for pattern, words in _FIELD_RULES:
        match = pattern.match(message)
        if match:
            rest = _lower_first(match.groupdict().get("rest") or "")
            rest = f"{int(rest):,}" if rest.isdigit() else rest
            return sentence(words.format(field=field, rest=rest))
    return sentence(f"{field}: {_lower_first(message)}")


def _field_errors(payload: Mapping[str, Any]) -> list[tuple[Any, str]]:
    errors = payload.get("errors")
    if not isinstance(errors, list):
        return []
    return [(e["loc"], str(e["msg"])) for e in errors if isinstance(e, dict) and "loc" in e and "msg" in e]


def describe(error: ApiError | str, labels: Mapping[str, str] | None = None) -> str:
    """Any API error (or its detail) as one or more sentences; ``labels`` names fields as the page does."""
    labels = labels or {}
    if isinstance(error, ApiError):
        detail, status, fields = error.detail, error.status, _field_errors(error.payload)
    else:
        detail, status, fields = str(error), 0, []
    if fields:
        return " ".join(field_sentence(field_label(loc, labels), msg) for loc, msg in fields)
    if status == 422:
        matches = [_FIELD_DETAIL.match(part.strip()) for part in detail.split("; ")]
        if all(matches):
            return " ".join(
                field_sentence(field_label(m["field"], labels), m["message"]) for m in matches if m is not None
            )
    return sentence(_with_labels(detail, labels))


def wait_words(seconds: int) -> str:
    """'in 40 seconds', 'in 1 minute', 'in 3 minutes': how long until something may be tried again."""
    if seconds < 90:
        return f"in {seconds} second{'' if seconds == 1 else 's'}"
    minutes = round(seconds / 60)
    return f"in {minutes} minute{'' if minutes == 1 else 's'}"


def retry_after(error: ApiError) -> int | None:
    """The seconds a 429 answer asks the person to wait, when it says."""
    match = _WAIT.search(error.detail)
    return int(match["seconds"]) if match else None


# -- checks before calling the API ---------------------------------------------------------------------------


def email_problem(email: str) -> str | None:
    """Why ``email`` cannot be an email address (None when it looks like one)."""
    email = email.strip()
    if not email:
        return "Enter your email address."
    if "@" not in email:
        return "An email address has an @, like `name@example.com`."
    if not _EMAIL_SHAPE.match(email):
        return "This is not an email address: it should read like `name@example.com`."
    return None


def new_password_problem(password: str) -> str | None:
    """Why ``password`` cannot be the password of a new account (None when it can)."""
    if len(password) < MIN_PASSWORD:
        return f"The password needs at least {MIN_PASSWORD} characters (this one has {len(password)})."
    if len(password) > MAX_PASSWORD:
        return f"The password can have at most {MAX_PASSWORD} characters."
    return None


# -- times -----------------------------------------------------------------------------------------------------


def parse_time(value: Any) -> datetime | None:
    """An API time (ISO 8601, UTC when it names no zone), or None."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def moment(value: Any, missing: str = "—") -> str:
    """An API time as the pages show one, '2026-12-01 10:20 UTC'; ``missing`` when there is none."""
    parsed = parse_time(value)
    return parsed.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if parsed else missing
