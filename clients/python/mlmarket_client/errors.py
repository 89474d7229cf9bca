"""The errors the client raises: one class per status the API answers with, all under :class:`MlmarketError`."""

from __future__ import annotations

from typing import Any


class MlmarketError(Exception):
    """Anything that went wrong talking to mlmarket.

    ``status`` is the HTTP status (None when no answer came), ``message`` the server's explanation (its
    ``detail``, or ``error`` on the Open Inference Protocol paths) and ``body`` the whole JSON answer.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status}: {message}" if status is not None else message)
        self.message = message
        self.status = status
        self.body = body
        self.headers = headers or {}


class BadRequest(MlmarketError):
    """400: the request is malformed (a broken CSV file, tensors that do not fit the model)."""


class AuthenticationError(MlmarketError):
    """401: no, a wrong, an expired or a revoked API key or token."""


class PaymentRequired(MlmarketError):
    """402: the call would cost more than may be spent (the balance, or an API key's monthly limit)."""


class InsufficientCredits(PaymentRequired):
    """402: the balance does not cover the call. ``need`` and ``have`` are credits when the server says them."""

    @property
    def need(self) -> int | None:
        return _int_field(self.body, "need")

    @property
    def have(self) -> int | None:
        return _int_field(self.body, "have")


class PermissionDenied(MlmarketError):
    """403: the key lacks the scope this call needs, or the account may not do it."""


class NotFound(MlmarketError):
    """404: no such model, version or task (another user's task is not found either)."""


class Conflict(MlmarketError):
    """409: the request conflicts with the current state (a task's results before it succeeded)."""


class PriceChanged(Conflict):
    """409: the model's price per row is above the ``max_price_per_row`` the call allowed; nothing was charged."""


class PayloadTooLarge(MlmarketError):
    """413: too many rows or bytes in one request."""


class ValidationError(MlmarketError):
    """422: the request is well formed but wrong (no valid row, a bad field); ``errors`` lists rows if given."""

    @property
    def errors(self) -> list[dict[str, Any]]:
        found = self.body.get("errors") if isinstance(self.body, dict) else None
        return list(found) if isinstance(found, list) else []


class RateLimited(MlmarketError):
    """429 after every retry: the server asked to slow down (see ``retry_after``)."""

    @property
    def retry_after(self) -> str | None:
        return self.headers.get("retry-after")


class ServiceUnavailable(MlmarketError):
    """503 after every retry: a service behind the API (database, broker, model store) is down."""


class ServerError(MlmarketError):
    """Another 5xx: a fault on the server's side."""


class ConnectionFailed(MlmarketError):
    """No answer: the server could not be reached, or the connection broke (``status`` is None)."""


class TaskFailed(MlmarketError):
    """The prediction ran and failed (its cost was refunded); ``task`` is the failed task."""

    def __init__(self, message: str, *, task: Any) -> None:
        super().__init__(message)
        self.task = task


class PredictionTimeout(MlmarketError):
    """The task did not finish within the wait asked for. It goes on: ``get(task_id)`` or ``stream(task_id)``."""

    def __init__(self, message: str, *, task_id: str) -> None:
        super().__init__(message)
        self.task_id = task_id


BY_STATUS: dict[int, type[MlmarketError]] = {
    400: BadRequest,
    401: AuthenticationError,
    402: PaymentRequired,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: ValidationError,
    429: RateLimited,
    503: ServiceUnavailable,
}


def _int_field(body: Any, name: str) -> int | None:
    value = body.get(name) if isinstance(body, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def error_for(status: int, body: Any, headers: dict[str, str], *, price_capped: bool = False) -> MlmarketError:
    """The error for an answer with ``status`` and JSON ``body`` (or text); ``price_capped`` when the request
    carried ``max_price_per_row``, so that a 409 means the price is above it."""
    if isinstance(body, dict):
        detail = body.get("detail", body.get("error"))
        message = detail if isinstance(detail, str) else str(detail if detail is not None else body)
    else:
        message = str(body or "").strip() or f"HTTP {status}"
    cls = BY_STATUS.get(status) or (ServerError if status >= 500 else MlmarketError)
    if status == 402 and (_int_field(body, "need") is not None or "balance" in message.lower()):
        cls = InsufficientCredits
    elif status == 409 and (price_capped or "price" in message.lower()):
        cls = PriceChanged
    return cls(message, status=status, body=body, headers=headers)
