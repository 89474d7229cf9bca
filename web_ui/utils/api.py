"""A small HTTP client for the mlmarket API, the only way the web UI reaches mlmarket.

Every failure becomes an :class:`ApiError` carrying words a person can act on:
the API's own ``detail`` for an error response, or a sentence about the
connection. A 401 on a signed-in call is a :class:`SessionExpired`.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import httpx

DEFAULT_API_URL = "http://127.0.0.1:8000"
API_PREFIX = "/api/v1"


def api_url() -> str:
    return (os.environ.get("MLMARKET_API_URL") or DEFAULT_API_URL).rstrip("/")


class ApiError(Exception):
    """An error answer of the API (``status`` > 0) or no answer at all (``status`` 0)."""

    def __init__(self, status: int, detail: str, payload: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.payload = payload or {}

    @property
    def row_errors(self) -> list[dict[str, Any]]:
        """Per-row reasons some errors carry (a prediction where no row was valid)."""
        errors = self.payload.get("errors")
        if not isinstance(errors, list):
            return []
        return [e for e in errors if isinstance(e, dict) and "row" in e and "reason" in e]


class SessionExpired(ApiError):
    """The token was refused: the person has to sign in again."""


def _detail_of(response: httpx.Response) -> tuple[str, dict[str, Any]]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("detail"):
        detail = body["detail"]
        return (detail if isinstance(detail, str) else json.dumps(detail)), body
    text = response.text.strip()
    if text and len(text) < 300 and "<" not in text:
        return text, {}
    return f"the API answered {response.status_code} {response.reason_phrase}", {}


class ApiClient:
    """Calls the API with the bearer token of the signed-in person, if any."""

    def __init__(
        self,
        token: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = (base_url or api_url()).rstrip("/")
        self.token = token
        self.timeout = timeout
        self.transport = transport

    # -- plumbing ---------------------------------------------------------------------------------

    def _http(self, timeout: float | httpx.Timeout | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.Client(
            base_url=self.base_url + API_PREFIX,
            headers=headers,
            timeout=timeout if timeout is not None else self.timeout,
            transport=self.transport,
        )

    def _raise_for(self, response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        detail, payload = _detail_of(response)
        if response.status_code == 401 and self.token:
            raise SessionExpired(401, detail, payload)
        raise ApiError(response.status_code, detail, payload)

    def _unreachable(self, exc: httpx.HTTPError) -> ApiError:
        if isinstance(exc, httpx.TimeoutException):
            return ApiError(0, f"the mlmarket API at {self.base_url} did not answer in time; please try again")
        return ApiError(0, f"cannot reach the mlmarket API at {self.base_url}; is it running? ({exc})")

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            with self._http() as http:
                response = http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        self._raise_for(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            raise ApiError(response.status_code, "the API answered with something that is not JSON") from exc

    # -- auth -------------------------------------------------------------------------------------

    def register(self, email: str, password: str, full_name: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"email": email, "password": password}
        if full_name:
            body["full_name"] = full_name
        return dict(self._json("POST", "/auth/register", json=body))

    def sign_in(self, email: str, password: str) -> str:
        """Returns an access token; does not change this client."""
        token = self._json("POST", "/auth/token", data={"username": email, "password": password})
        return str(token["access_token"])

    def me(self) -> dict[str, Any]:
        return dict(self._json("GET", "/users/me"))

    # -- wallet -----------------------------------------------------------------------------------

    def wallet(self) -> dict[str, Any]:
        return dict(self._json("GET", "/wallet"))

    def top_up(self, amount: int, idempotency_key: str | None = None) -> dict[str, Any]:
        key = idempotency_key or str(uuid.uuid4())
        return dict(self._json("POST", "/wallet/top-ups", json={"amount": amount}, headers={"Idempotency-Key": key}))

    def ledger(self, limit: int = 500, offset: int = 0) -> list[dict[str, Any]]:
        return list(self._json("GET", "/wallet/ledger", params={"limit": limit, "offset": offset}))

    # -- catalog ----------------------------------------------------------------------------------

    def models(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/models"))

    def model(self, name: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/models/{name}"))

    # -- predictions ------------------------------------------------------------------------------

    def predict_rows(
        self, model: str, rows: list[dict[str, Any]], version: int | None = None, probabilities: bool = False
    ) -> dict[str, Any]:
        """Pays for and queues ``rows``; with ``probabilities``, a classifier's results carry each class's."""
        body: dict[str, Any] = {"model": model, "rows": rows}
        if version is not None:
            body["version"] = version
        if probabilities:
            body["probabilities"] = True
        return dict(self._json("POST", "/predictions", json=body))

    def predict_csv(
        self, model: str, filename: str, data: bytes, version: int | None = None, probabilities: bool = False
    ) -> dict[str, Any]:
        form = {"model": model}
        if version is not None:
            form["version"] = str(version)
        if probabilities:
            form["probabilities"] = "true"
        files = {"file": (filename or "rows.csv", data, "text/csv")}
        return dict(self._json("POST", "/predictions", data=form, files=files))

    def prediction(self, task_id: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/predictions/{task_id}"))

    def predictions(self, status: str | None = None, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if status:
            params["status"] = status
        return list(self._json("GET", "/predictions", params=params))

    def results_csv(self, task_id: str) -> bytes:
        return self.request("GET", f"/predictions/{task_id}/results.csv").content

    def prediction_events(self, task_id: str, max_seconds: float = 600.0) -> Iterator[dict[str, Any]]:
        """The task's status changes as the API streams them (Server-Sent Events), until it finishes."""
        timeout = httpx.Timeout(connect=10.0, read=max_seconds, write=10.0, pool=10.0)
        try:
            with (
                self._http(timeout=timeout) as http,
                http.stream("GET", f"/predictions/{task_id}/events") as response,
            ):
                if response.status_code >= 400:
                    response.read()
                    self._raise_for(response)
                data: list[str] = []
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif not line and data:
                        event = json.loads("\n".join(data))
                        data = []
                        if isinstance(event, dict):
                            yield event
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        except ValueError as exc:
            raise ApiError(0, "the API sent a status update that could not be read") from exc

    # -- training studio ----------------------------------------------------------------------------

    def datasets(self, include_deleted: bool = False) -> list[dict[str, Any]]:
        params = {"include_deleted": "true"} if include_deleted else {}
        return list(self._json("GET", "/datasets", params=params))

    def dataset_info(self, dataset_id: int) -> dict[str, Any]:
        return dict(self._json("GET", f"/datasets/{dataset_id}/info"))

    def append_rows(self, dataset_id: int, rows: list[dict[str, Any]]) -> dict[str, Any]:
        return dict(self._json("POST", f"/datasets/{dataset_id}/rows", json={"rows": rows}))

    def reset_dataset(self, dataset_id: int) -> dict[str, Any]:
        return dict(self._json("POST", f"/datasets/{dataset_id}/reset"))

    def restore_dataset(self, dataset_id: int) -> dict[str, Any]:
        return dict(self._json("POST", f"/datasets/{dataset_id}/restore"))

    def delete_dataset(self, dataset_id: int, hard: bool = False) -> None:
        self.request("DELETE", f"/datasets/{dataset_id}", params={"hard": "true"} if hard else {})

    def upload_dataset(self, filename: str, data: bytes, target: str | None = None, name: str | None = None) -> Any:
        form = {k: v for k, v in (("target", target), ("name", name)) if v}
        return dict(self._json("POST", "/datasets", data=form, files={"file": (filename, data, "text/csv")}))

    def algorithms(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/algorithms"))

    def start_training(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self._json("POST", "/training-jobs", json=body))

    def training_jobs(self, limit: int = 100, include_deleted: bool = False) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if include_deleted:
            params["include_deleted"] = "true"
        return list(self._json("GET", "/training-jobs", params=params))

    def training_job(self, job_id: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/training-jobs/{job_id}"))

    def training_report(self, job_id: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/training-jobs/{job_id}/report"))

    def training_report_pdf(self, job_id: str) -> bytes:
        return self.request("GET", f"/training-jobs/{job_id}/report.pdf").content

    def training_artifact(self, job_id: str) -> bytes:
        return self.request("GET", f"/training-jobs/{job_id}/artifact").content

    def retrain(
        self, job_id: str, dataset_id: int | None = None, hyperparameters: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if dataset_id is not None:
            body["dataset_id"] = dataset_id
        if hyperparameters is not None:
            body["hyperparameters"] = hyperparameters
        return dict(self._json("POST", f"/training-jobs/{job_id}/retrain", json=body))

    def restore_training_job(self, job_id: str) -> dict[str, Any]:
        return dict(self._json("POST", f"/training-jobs/{job_id}/restore"))

    def delete_training_job(self, job_id: str, hard: bool = False) -> None:
        self.request("DELETE", f"/training-jobs/{job_id}", params={"hard": "true"} if hard else {})

    def unpublish(self, name: str) -> list[dict[str, Any]]:
        return list(self._json("POST", f"/models/{name}/unpublish"))

    def publish(self, job_id: str, name: str, price_per_row: int, description: str = "") -> dict[str, Any]:
        body = {"training_job_id": job_id, "name": name, "price_per_row": price_per_row, "description": description}
        return dict(self._json("POST", "/models", json=body))

    def workers(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/admin/workers"))

    def queues(self) -> dict[str, Any]:
        return dict(self._json("GET", "/admin/queues"))

    # -- API keys ---------------------------------------------------------------------------------

    def api_keys(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/api-keys"))

    def create_api_key(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self._json("POST", "/api-keys", json=body))

    def revoke_api_key(self, key_id: int) -> None:
        self.request("DELETE", f"/api-keys/{key_id}")

    # -- admin ------------------------------------------------------------------------------------

    def admin_users(self, limit: int = 500, offset: int = 0) -> list[dict[str, Any]]:
        return list(self._json("GET", "/admin/users", params={"limit": limit, "offset": offset}))

    def admin_credit(
        self, user_id: int, amount: int, memo: str | None = None, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"amount": amount}
        if memo:
            body["memo"] = memo
        key = idempotency_key or str(uuid.uuid4())
        return dict(self._json("POST", f"/admin/users/{user_id}/credits", json=body, headers={"Idempotency-Key": key}))

    def verify_ledger(self) -> dict[str, Any]:
        return dict(self._json("GET", "/admin/ledger/verify"))
