"""One error hierarchy for mlmarket. Each error carries its HTTP status; one handler renders them.

Services raise these without importing FastAPI, so the worker, the CLI and the
API share them.
"""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    status_code = 400
    headers: dict[str, str] | None = None

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class BadRequest(AppError):
    status_code = 400


class Unauthorized(AppError):
    status_code = 401
    headers = {"WWW-Authenticate": "Bearer"}


class InsufficientFunds(AppError):
    status_code = 402

    def __init__(self, need: int, have: int) -> None:
        super().__init__(f"insufficient balance: need {need}, have {have}", need=need, have=have)
        self.need = need
        self.have = have


class Forbidden(AppError):
    status_code = 403


class NotFound(AppError):
    status_code = 404


class Conflict(AppError):
    status_code = 409


class PayloadTooLarge(AppError):
    status_code = 413


class Unprocessable(AppError):
    status_code = 422


class TooManyRequests(AppError):
    status_code = 429


class ServiceUnavailable(AppError):
    status_code = 503


class StoreError(AppError):
    """The model artifact store (DVC and its remote) cannot serve the request."""

    status_code = 503


class ArtifactCorrupted(StoreError):
    """An artifact's bytes do not match the md5 recorded for it."""


class ArtifactMissing(StoreError):
    """No artifact with the requested md5 exists in the store's remote."""
