"""The data plane of synchronous, billed inference: what the REST and gRPC Open Inference Protocol routes call.

Transports decode a request into :class:`~app.services.oip.InferRequest` and
encode the :class:`~app.services.oip.InferResponse`; everything else is here:

- who is calling: the user behind a bearer token or an API key, remembered for
  ``auth_cache_seconds`` (a deactivated user is refused within that time; a
  revoked key at once, by the charging transaction that locks its row);
- which model: an in-memory view of the catalog, dropped when a version is
  published or hidden (in every API process, see app.core.notify);
- the rows: checked against the model's schema before anything else happens,
  so a bad request is its own 400 and never touches the database;
- the bill (:mod:`app.services.billing`): requests that arrive while a batch is
  being served form the next batch; the batch reserves every request's funds,
  runs one predict per model on the rows it could pay for, and records the
  tasks, holds and ledger entries with set-based statements in one
  transaction. A request alone on an idle server is served at once.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine

from app import __version__
from app.core import security
from app.core.config import Settings
from app.core.db import read_session
from app.core.errors import BadRequest, Unauthorized
from app.models.api_key import Scope
from app.models.catalog import ONNX_RUNTIME, ModelVersion
from app.models.user import User
from app.runtime.batching import Coalescer
from app.runtime.cache import ModelCache
from app.runtime.schema import Feature
from app.services import api_keys, billing, catalog, oip, oip_columns, submissions
from app.store.base import ArtifactRef

AUTH_CACHE_MAX_ENTRIES = 10_000
_INVALID_TOKEN = "invalid or expired token; sign in again"  # noqa: S105 - a message, not a secret


@dataclass(frozen=True)
class Principal:
    """Who is calling: the user a bearer token belongs to; for an API key, the key and its scopes too (None: a
    login token, which may do everything)."""

    user_id: int
    api_key_id: int | None = None
    scopes: frozenset[str] | None = None


@dataclass(frozen=True)
class ServedModel:
    """What serving needs of one catalog version, read once and kept in memory."""

    id: int
    name: str
    version: int
    task: str
    price_per_row: int
    owner_id: int | None
    features: list[Feature]
    classes: list[Any] | None
    runtime: str
    artifact: ArtifactRef
    onnx: ArtifactRef | None
    versions: list[int]

    @property
    def model_ref(self) -> ArtifactRef:
        """The artifact that is served: the compiled model when there is one."""
        return self.onnx if self.runtime == ONNX_RUNTIME and self.onnx is not None else self.artifact

    @classmethod
    def of(cls, model: ModelVersion, versions: list[int]) -> ServedModel:
        onnx = None
        if model.onnx_md5 and model.onnx_size is not None and model.onnx_path:
            onnx = ArtifactRef(md5=model.onnx_md5, size=model.onnx_size, path=model.onnx_path)
        return cls(
            id=model.id or 0,
            name=model.name,
            version=model.version,
            task=model.task,
            price_per_row=model.price_per_row,
            owner_id=model.owner_id,
            features=catalog.features_of(model),
            classes=list(model.classes) if model.classes is not None else None,
            runtime=model.runtime if onnx is not None else "sklearn",
            artifact=catalog.artifact_ref(model),
            onnx=onnx,
            versions=versions,
        )


class TokenCache:
    """Bearer token → user, for a few seconds (never past the token's own expiry)."""

    def __init__(self, engine: Engine, secret_key: str, seconds: float) -> None:
        self.engine = engine
        self.secret_key = secret_key
        self.seconds = seconds
        self._entries: dict[str, tuple[Principal, float]] = {}

    def cached(self, token: str) -> Principal | None:
        entry = self._entries.get(token)
        if entry is not None and entry[1] > time.monotonic():
            return entry[0]
        return None

    def load(self, token: str) -> Principal:
        """Checks the token and looks its user up (blocking: call it in a thread)."""
        if security.looks_like_api_key(token):
            return self._load_key(token)
        try:
            subject, expires_at = security.decode_access_token_with_expiry(token, self.secret_key)
        except security.InvalidToken as exc:
            raise Unauthorized(_INVALID_TOKEN) from exc
        with read_session(self.engine) as session:
            user = session.get(User, int(subject)) if subject.isdigit() and len(subject) < 12 else None
        if user is None or not user.is_active:
            raise Unauthorized(_INVALID_TOKEN)
        principal = Principal(user_id=user.id or 0)
        self._remember(token, principal, expires_at)
        return principal

    def _load_key(self, token: str) -> Principal:
        """An API key's user and scopes. Remembered like a token: its scopes never change, and whether it may
        still pay (revoked, expired, over its limit) is checked in the transaction that charges it."""
        with read_session(self.engine) as session:
            key = api_keys.identify(session, token)
        principal = Principal(user_id=key.user_id, api_key_id=key.id, scopes=key.scopes)
        self._remember(token, principal, key.expires_at.timestamp() if key.expires_at is not None else None)
        return principal

    def _remember(self, token: str, principal: Principal, expires_at: float | None) -> None:
        if self.seconds <= 0:
            return
        left = self.seconds if expires_at is None else min(self.seconds, max(0.0, expires_at - time.time()))
        if len(self._entries) >= AUTH_CACHE_MAX_ENTRIES:
            self._entries.clear()
        self._entries[token] = (principal, time.monotonic() + left)


class CatalogView:
    """(name, version or newest) → :class:`ServedModel`, valid until the catalog changes or ``seconds`` pass."""

    def __init__(self, engine: Engine, seconds: float) -> None:
        self.engine = engine
        self.seconds = seconds
        self._entries: dict[tuple[str, int | None], tuple[ServedModel, int, float]] = {}
        self._lock = threading.Lock()

    def cached(self, name: str, version: int | None) -> ServedModel | None:
        entry = self._entries.get((name, version))
        if entry is None:
            return None
        model, generation, until = entry
        if generation != catalog.GENERATION.value or until < time.monotonic():
            return None
        return model

    def load(self, name: str, version: int | None) -> ServedModel:
        """Reads the version from the database (blocking: call it in a thread); NotFound when not sold."""
        generation = catalog.GENERATION.value  # read before the database: a change after it makes this entry stale
        with read_session(self.engine) as session:
            model = catalog.resolve(session, name, version)
            versions = [v.version for v in catalog.published_versions_of(session, name)]
            served = ServedModel.of(model, versions)
        if self.seconds > 0:
            with self._lock:
                self._entries[(name, version)] = (served, generation, time.monotonic() + self.seconds)
        return served


class DataPlane:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        model_cache: ModelCache,
        secret_key: str,
        serving_engine: Engine | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        billing_engine = serving_engine or engine
        self.model_cache = model_cache
        self.tokens = TokenCache(engine, secret_key, settings.auth_cache_seconds)
        self.catalog = CatalogView(engine, settings.catalog_cache_seconds)
        self.biller: Coalescer[billing.Order, billing.Bill] = Coalescer(
            lambda orders: billing.serve_and_bill(billing_engine, orders, settings.author_share_percent),
            max_items=settings.batch_max_rows if settings.batching_enabled else 1,
        )
        # Paid tasks for the queue: the submissions that arrive while one batch is written form the next.
        self.queue: Coalescer[submissions.Submission, submissions.Queued] = Coalescer(
            lambda subs: submissions.submit_many(billing_engine, subs),
            max_items=settings.batch_max_rows if settings.batching_enabled else 1,
        )
        self.on_queued: Callable[[], None] = lambda: None

    # -- who and what ---------------------------------------------------------------------------------

    async def authenticate(self, token: str | None) -> Principal:
        if not token:
            raise Unauthorized("not authenticated: send 'Authorization: Bearer <token>' from /api/v1/auth/token")
        principal = self.tokens.cached(token)
        if principal is None:
            principal = await asyncio.to_thread(self.tokens.load, token)
        return principal

    async def model(self, name: str, version: int | None) -> ServedModel:
        served = self.catalog.cached(name, version)
        if served is None:
            served = await asyncio.to_thread(self.catalog.load, name, version)
        return served

    async def predictor(self, model: ServedModel) -> billing.Predictor:
        loaded: billing.Predictor | None = self.model_cache.peek(model.model_ref.md5)
        if loaded is None:
            loaded = await asyncio.to_thread(load_predictor, self.model_cache, model)
        assert loaded is not None  # noqa: S101 - load_predictor loads or raises
        return loaded

    async def submit_task(self, submission: submissions.Submission) -> submissions.Queued:
        """Charges for and queues a paid task (with the others arriving now); wakes the outbox relay."""
        queued = await self.queue.submit(submission)
        self.on_queued()
        return queued

    # -- the protocol ---------------------------------------------------------------------------------

    def server_metadata(self) -> dict[str, Any]:
        return {"name": "mlmarket", "version": __version__, "extensions": ["binary_tensor_data"]}

    async def model_metadata(self, name: str, version: int | None) -> dict[str, Any]:
        model = await self.model(name, version)
        return {
            "name": model.name,
            "versions": [str(v) for v in model.versions],
            "platform": f"mlmarket-{model.runtime}",
            "inputs": oip_columns.input_metadata(model.features),
            "outputs": oip_columns.output_metadata(model.task, model.classes),
            "parameters": {
                "price_per_row": model.price_per_row,
                "task": model.task,
                "version": str(model.version),
                "runtime": model.runtime,
            },
        }

    async def model_ready(self, name: str, version: int | None) -> dict[str, Any]:
        model = await self.model(name, version)
        return {"name": model.name, "version": str(model.version), "ready": True}

    async def infer(
        self, principal: Principal, name: str, version: int | None, request: oip.InferRequest
    ) -> oip.InferResponse:
        api_keys.require_scope(principal.scopes, Scope.predict, "run predictions")
        max_price = max_price_per_row(request.parameters)
        model = await self.model(name, version)
        billing.check_price(model.name, model.version, model.price_per_row, max_price)
        outputs = oip_columns.requested_outputs(request.outputs, model.task)
        probabilities = any(kind == oip_columns.PROBABILITIES for _, kind in outputs)
        n, columns = oip_columns.to_columns(request.inputs, model.features, self.settings.predict_max_rows)
        predictor = await self.predictor(model)
        if probabilities and not billing.gives_probabilities(predictor):
            raise BadRequest(f"model {model.name!r} version {model.version} does not give class probabilities")
        bill = await self.biller.submit(
            billing.Order(
                user_id=principal.user_id,
                api_key_id=principal.api_key_id,
                model=billing.Priced(model.id, model.name, model.version, model.price_per_row, model.owner_id),
                model_key=model.model_ref.md5,
                predictor=predictor,
                features=model.features,
                columns=columns,
                rows=n,
                request_id=request.id,
                probabilities=probabilities,
            )
        )
        return oip.InferResponse(
            model_name=model.name,
            model_version=str(model.version),
            id=request.id if request.id is not None else bill.task_id,
            parameters={"task_id": bill.task_id, "cost": bill.cost},
            outputs=[_output(bill, name, kind) for name, kind in outputs],
        )


def _output(bill: billing.Bill, name: str, kind: str) -> oip.Tensor:
    if kind == oip_columns.PROBABILITIES and bill.probabilities is not None:
        return oip_columns.probability_tensor(bill.probabilities, bill.classes or [], name)
    return oip_columns.output_tensor(bill.predictions, name)


def max_price_per_row(parameters: dict[str, Any] | None) -> int | None:
    """The request's ``parameters.max_price_per_row``: a whole number of credits of at least 1, or absent."""
    value = (parameters or {}).get("max_price_per_row")
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= 15:
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 2**53:
        raise BadRequest("parameters.max_price_per_row must be a whole number of credits, at least 1")
    return value


def load_predictor(cache: ModelCache, model: ServedModel) -> billing.Predictor:
    """The served model from the cache, fetched and loaded on a miss (blocking)."""
    predictor: billing.Predictor = cache.get(model.model_ref, _loader(model))
    return predictor


def _loader(model: ServedModel) -> Any:
    """How the served artifact is loaded: onnxruntime for a compiled model, skops for the rest (the default)."""
    if model.runtime != ONNX_RUNTIME or model.onnx is None:
        return None
    from app.runtime.compiled import CompiledModel

    features, task, classes = model.features, model.task, model.classes

    def load(path: Any) -> Any:
        return CompiledModel.load(path, features, task, classes)

    return load
