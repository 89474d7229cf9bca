"""The async client: :class:`AsyncClient` has the methods of :class:`mlmarket_client.Client`, to be awaited."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, overload

import httpx

from mlmarket_client import _core, errors
from mlmarket_client._core import InferResult, Model, PredictionResult, Task


class AsyncClient:
    """mlmarket for a buyer's asyncio program (the twin of :class:`mlmarket_client.Client`).

    ``Client()`` reads ``MLMARKET_URL`` and ``MLMARKET_API_KEY`` from the environment; an ``api_key`` (or a login
    ``token``) is sent as ``Authorization: Bearer ...``. Answers 429 and 503 are retried ``max_retries`` times
    with exponential backoff, waiting as long as ``Retry-After`` says; failed connections are retried too, and
    broken ones only for calls that change nothing. Use it as an async context manager, or await :meth:`close`.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        token: str | None = None,
        *,
        timeout: float = _core.DEFAULT_TIMEOUT,
        max_retries: int = _core.DEFAULT_MAX_RETRIES,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._config = _core.Config.resolve(base_url, api_key, token, timeout, max_retries)
        self._http = httpx.AsyncClient(
            base_url=self._config.base_url, headers=self._config.headers(), timeout=timeout, transport=transport
        )
        self._models: dict[str, Model] = {}

    @property
    def base_url(self) -> str:
        return self._config.base_url

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- account ------------------------------------------------------------------------------------------

    async def login(self, email: str, password: str) -> str:
        """Signs in with an email and password and uses the token from now on (an API key is meant for
        programs; this is for trying things out). Returns the token."""
        response = await self._send("POST", "/api/v1/auth/token", data={"username": email, "password": password})
        token = str(response.json()["access_token"])
        self._http.headers["Authorization"] = f"Bearer {token}"
        return token

    async def balance(self) -> int:
        """The credits on the account."""
        return int((await self._send("GET", "/api/v1/wallet")).json()["balance"])

    # -- catalog ------------------------------------------------------------------------------------------

    async def models(self) -> list[Model]:
        """The catalog: the newest published version of each model."""
        return [Model.from_json(m) for m in (await self._send("GET", "/api/v1/models")).json()]

    async def model(self, name: str) -> Model:
        """One model with all its published ``versions``."""
        model = Model.from_json((await self._send("GET", f"/api/v1/models/{_core.path_part(name)}")).json())
        self._models[name] = model
        return model

    # -- predictions --------------------------------------------------------------------------------------

    @overload
    async def predict(
        self,
        model: str,
        rows: Sequence[Mapping[str, Any]],
        *,
        version: int | None = None,
        wait: bool | float = True,
        max_price_per_row: int | None = None,
        column: str = "prediction",
        probabilities: bool = False,
    ) -> PredictionResult: ...

    @overload
    async def predict(
        self,
        model: str,
        rows: Any,
        *,
        version: int | None = None,
        wait: bool | float = True,
        max_price_per_row: int | None = None,
        column: str = "prediction",
        probabilities: bool = False,
    ) -> Any: ...

    async def predict(
        self,
        model: str,
        rows: Any,
        *,
        version: int | None = None,
        wait: bool | float = True,
        max_price_per_row: int | None = None,
        column: str = "prediction",
        probabilities: bool = False,
    ) -> Any:
        """Predicts ``rows`` and waits for the result.

        ``rows`` is a list of ``{feature: value}`` objects, giving a :class:`PredictionResult` whose
        ``predictions`` line up with them (None, and an entry in ``errors``, for a rejected row), or a pandas
        DataFrame, giving a copy with a ``column`` of predictions (and ``error`` if some rows were rejected).
        ``wait`` is True (as long as it takes) or at most that many seconds (then :class:`PredictionTimeout`,
        and the task goes on). ``max_price_per_row`` refuses (409, :class:`PriceChanged`) a model that costs
        more per row, charging nothing. A failed task raises :class:`TaskFailed` (it was refunded).
        ``probabilities=True`` (classifiers only, the same price) also gives each row's probability per class:
        ``classes`` and ``probabilities`` on the result, or a ``probability_<class>`` column per class after
        ``column`` in the DataFrame.
        """
        deadline = _core.wait_deadline(wait, time.monotonic())
        accepted = await self._submit(
            model, rows, version, max_price_per_row, deadline, waiting=True, probabilities=probabilities
        )
        task = accepted if accepted.finished else await self._wait(accepted.id, deadline)
        return _core.shaped(_core.finished_result(task, accepted), rows, column)

    async def submit(
        self, model: str, rows: Any, *, version: int | None = None, max_price_per_row: int | None = None
    ) -> Task:
        """Queues a prediction and returns the task at once (charged already); follow it with :meth:`get` or
        :meth:`stream`. Its ``results`` line up with ``rows``."""
        return await self._submit(model, rows, version, max_price_per_row, None, waiting=False)

    async def get(self, task_id: str) -> Task:
        """A task as it is now, with its ``results`` once it succeeded."""
        return Task.from_json((await self._send("GET", f"{_core.PREDICTIONS}/{_core.path_part(task_id)}")).json())

    def stream(self, task_id: str) -> AsyncIterator[Task]:
        """The task's states as the server sends them (Server-Sent Events), the first at once, ending with the
        finished one. The states carry no ``results``: :meth:`get` the task when it has succeeded."""
        return self._events(task_id, None)

    async def results_csv(self, task_id: str) -> str:
        """Every row sent, its prediction, status and error, as the server's CSV."""
        return (await self._send("GET", f"{_core.PREDICTIONS}/{_core.path_part(task_id)}/results.csv")).text

    async def infer(
        self,
        model: str,
        inputs: Any,
        *,
        version: int | None = None,
        max_price_per_row: int | None = None,
        request_id: str | None = None,
    ) -> InferResult:
        """A synchronous, billed prediction over the Open Inference Protocol (``/v2/models/{name}/infer``).

        ``inputs`` is a list of OIP tensors (sent as they are), a DataFrame, ``{feature: [values]}`` or a list
        of ``{feature: value}`` rows. A bad row refuses the whole request (:class:`BadRequest`).
        """
        features = await self._features(model, version) if _core.is_dataframe(inputs) else None
        path = f"/v2/models/{_core.path_part(model)}"
        if version is not None:
            path += f"/versions/{int(version)}"
        body = _core.infer_body(inputs, features, max_price_per_row, request_id)
        response = await self._send(
            "POST",
            f"{path}/infer",
            content=_core.encode(body),
            idempotent=False,
            price_capped=max_price_per_row is not None,
        )
        return InferResult.from_json(response.json())

    # -- internals ----------------------------------------------------------------------------------------

    async def _features(self, model: str, version: int | None) -> list[str]:
        cached = self._models.get(model)
        if cached is None or (version is not None and version != cached.version and not cached.versions):
            cached = await self.model(model)
        return _core.features_of(cached, version)

    async def _submit(
        self,
        model: str,
        rows: Any,
        version: int | None,
        max_price_per_row: int | None,
        deadline: float | None,
        *,
        waiting: bool,
        probabilities: bool = False,
    ) -> Task:
        if _core.is_dataframe(rows):
            listed = _core.frame_rows(rows, await self._features(model, version))
        else:
            listed = _core.listed_rows(rows)
        body = _core.prediction_body(model, listed, version, max_price_per_row, probabilities)
        headers: dict[str, str] = {"Content-Type": "application/json"}
        timeout: float | None = None
        if waiting:
            seconds = _core.prefer_wait(None if deadline is None else deadline - time.monotonic())
            headers["Prefer"] = f"wait={seconds}"
            timeout = self._config.timeout + seconds
        response = await self._send(
            "POST",
            _core.PREDICTIONS,
            content=_core.encode(body),
            headers=headers,
            timeout=timeout,
            idempotent=False,
            price_capped=max_price_per_row is not None,
        )
        return Task.from_json(response.json())

    async def _wait(self, task_id: str, deadline: float | None) -> Task:
        async for state in self._events(task_id, deadline):
            if state.finished:
                return await self.get(task_id)
        raise errors.PredictionTimeout(f"prediction {task_id} has not finished yet", task_id=task_id)

    async def _events(self, task_id: str, deadline: float | None) -> AsyncIterator[Task]:
        """States until the finished one; reconnects when the server ends the stream early or the connection
        breaks; ends (without the finished state) at ``deadline``."""
        path = f"{_core.PREDICTIONS}/{_core.path_part(task_id)}/events"
        failures = 0
        while deadline is None or time.monotonic() < deadline:
            remaining = None if deadline is None else max(0.05, deadline - time.monotonic())
            read = self._config.timeout if remaining is None else min(self._config.timeout, remaining)
            response = await self._send(
                "GET",
                path,
                headers={"Accept": "text/event-stream"},
                timeout=httpx.Timeout(self._config.timeout, read=read),
                stream=True,
            )
            try:
                async for state in _core.atasks_of(response.aiter_lines()):
                    failures = 0
                    yield state
                    if state.finished:
                        return
                    if deadline is not None and time.monotonic() >= deadline:
                        return
            except httpx.TimeoutException:
                if deadline is not None and time.monotonic() >= deadline:
                    return
                failures += 1
            except httpx.TransportError as exc:
                failures += 1
                if failures > self._config.max_retries:
                    raise _core.connection_error(exc, response.request) from exc
                await asyncio.sleep(_core.backoff_seconds(failures - 1))
            finally:
                await response.aclose()
            if failures > self._config.max_retries:
                raise errors.ConnectionFailed(f"the event stream of {task_id} stopped answering")

    async def _send(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        data: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | httpx.Timeout | None = None,
        idempotent: bool | None = None,
        price_capped: bool = False,
        stream: bool = False,
    ) -> httpx.Response:
        request = self._http.build_request(
            method,
            path,
            content=content,
            data=data,
            headers=headers,
            timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
        )
        safe = method in ("GET", "HEAD") if idempotent is None else idempotent
        attempt = 0
        while True:
            try:
                response = await self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                if attempt < self._config.max_retries and _core.transport_retryable(exc, safe):
                    await asyncio.sleep(_core.backoff_seconds(attempt))
                    attempt += 1
                    continue
                raise _core.connection_error(exc, request) from exc
            if response.status_code < 400:
                return response
            delay = _core.status_retry_delay(response, attempt) if attempt < self._config.max_retries else None
            await response.aread()
            await response.aclose()
            if delay is None:
                _core.raise_for_status(response, price_capped=price_capped)
            await asyncio.sleep(delay or 0.0)
            attempt += 1
