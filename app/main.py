"""The mlmarket API: ``create_app()`` builds it from one Settings object."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.security.utils import get_authorization_scheme_param
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlmodel import Session

from app import __version__
from app.api.errors import install_error_handlers
from app.api.metrics import MetricsMiddleware
from app.api.middleware import BodySizeLimitMiddleware, RequestIdMiddleware, SecurityHeadersMiddleware
from app.api.router import api_router
from app.api.routes import health, inference
from app.api.text_guard import UnstorableTextMiddleware
from app.core import metrics as metrics_
from app.core.config import Settings, get_settings
from app.core.db import make_engine, read_session
from app.core.errors import Unauthorized
from app.core.notify import CATALOG_CHANNEL, OUTBOX_CHANNEL, TASKS_CHANNEL, Listener
from app.queue.base import PREDICT_QUEUE, TRAIN_QUEUE, WEBHOOK_QUEUE, dead_queue
from app.queue.factory import make_broker
from app.runtime.cache import ModelCache
from app.services import catalog, ledger, predictions, webhooks
from app.services.dataplane import DataPlane
from app.services.outbox import OutboxRelay
from app.services.throttle import LoginThrottle
from app.store import make_store
from ml_worker.heartbeat import Heartbeat
from ml_worker.training import TrainingWorker
from ml_worker.webhooks import WebhookWorker
from ml_worker.worker import PredictionWorker

log = logging.getLogger("mlmarket.api")
WORKER_START_RETRY_SECONDS = 2.0


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    engine = make_engine(settings)
    store = make_store(settings)
    broker = make_broker(settings)
    relay = OutboxRelay(
        engine,
        broker,
        poll_seconds=settings.outbox_poll_seconds,
        stale_seconds=settings.task_stale_seconds,
        training_stale_seconds=settings.training_stale_seconds,
        training_sweep_seconds=settings.training_sweep_seconds,
        # A pending webhook event with no attempt for longer than any retry wait lost its message.
        webhook_stale_seconds=2 * settings.webhook_retry_max_seconds + 60,
    )
    # One model cache per process, shared by the synchronous inference path and an in-process worker.
    model_cache = ModelCache(store, settings.model_cache_max_models, settings.model_cache_max_bytes)

    secret_key = settings.resolved_secret_key()
    # The serving path bills on connections of its own, without a liveness ping per checkout (it retries a
    # batch whose connection turned out dead).
    serving_engine = make_engine(settings, pre_ping=False)
    dataplane = DataPlane(settings, engine, model_cache, secret_key, serving_engine=serving_engine)
    # On PostgreSQL the other processes' commits reach this one as notices: new tasks in the outbox (for the
    # relay), tasks started and finished by workers (for requests waiting on them).
    dataplane.on_queued = relay.wake
    listener = (
        None
        if settings.is_sqlite
        else Listener(
            engine,
            {
                CATALOG_CHANNEL: lambda _payload: catalog.GENERATION.bump(),
                OUTBOX_CHANNEL: relay.wake,
                TASKS_CHANNEL: predictions.WATCHERS.on_notice,
            },
        )
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        background: list[asyncio.Task[None]] = []
        grpc_server = None
        if listener is not None:
            listener.start()
        if settings.grpc_port:
            from app.api.grpc.server import start_grpc_server

            grpc_server = await start_grpc_server(dataplane, settings.host, settings.grpc_port, settings)
        try:
            await broker.connect()
        except Exception as exc:  # the relay keeps trying; requests are still accepted into the outbox
            log.warning("broker unreachable at start-up (%s); tasks wait in the outbox", exc)
        if settings.embedded_queue:
            background.append(asyncio.create_task(_requeue_open_tasks(app), name="requeue-open-tasks"))
        background.append(asyncio.create_task(relay.run(), name="outbox-relay"))
        background.append(asyncio.create_task(_verify_ledger_periodically(app), name="ledger-verify"))
        if settings.worker_in_api:
            app.state.worker = PredictionWorker(settings, engine, model_cache)
            background.append(asyncio.create_task(_start_worker(app), name="worker-start"))
            app.state.webhook_worker = WebhookWorker(settings, engine)
            background.append(asyncio.create_task(_start_webhook_worker(app), name="webhook-worker-start"))
            trainer = TrainingWorker(settings, engine, store)
            requeue = settings.embedded_queue
            background.append(asyncio.create_task(trainer.run_in_process(broker, requeue=requeue), name="trainer"))
            heartbeat = Heartbeat(engine, [PREDICT_QUEUE, TRAIN_QUEUE], [app.state.worker, trainer])
            background.append(asyncio.create_task(heartbeat.run(), name="heartbeat"))
        try:
            yield
        finally:
            if grpc_server is not None:
                await grpc_server.stop(grace=1.0)
            if listener is not None:
                listener.stop()
            for task in background:
                task.cancel()
            for task in background:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await broker.close()
            if app.state.webhook_worker is not None:
                await app.state.webhook_worker.sender.aclose()
            engine.dispose()
            serving_engine.dispose()

    app = FastAPI(
        title="mlmarket",
        version=__version__,
        description="A prediction marketplace: pay per predicted row, publish trained models for money.",
        lifespan=lifespan,
        # The interactive docs and the schema can be turned off (off by default in production).
        docs_url="/docs" if settings.docs_on else None,
        redoc_url="/redoc" if settings.docs_on else None,
        openapi_url="/openapi.json" if settings.docs_on else None,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.store = store
    app.state.broker = broker
    app.state.relay = relay
    app.state.worker = None
    app.state.webhook_worker = None
    app.state.model_cache = model_cache
    app.state.dataplane = dataplane
    app.state.secret_key = secret_key
    app.state.ledger_verified_at = 0.0
    app.state.login_throttle = LoginThrottle(
        engine,
        max_failures=settings.login_max_failures,
        window_seconds=settings.login_window_seconds,
        max_account_failures=settings.login_max_failures_per_account,
    )

    install_error_handlers(app)
    app.add_middleware(UnstorableTextMiddleware)  # inside the size limit: it buffers JSON bodies of bounded size
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_request_bytes)
    app.add_middleware(MetricsMiddleware)
    app.add_middleware(SecurityHeadersMiddleware, hsts=settings.hsts)
    app.add_middleware(RequestIdMiddleware)  # outermost: every log line of the request carries its id

    app.include_router(inference.router)
    app.include_router(api_router)
    app.include_router(health.router)
    app.router.routes[0:0] = inference.SERVING_ROUTES  # first: the serving path is matched before any other

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        if settings.metrics_token and not _bearer_matches(request, settings.metrics_token):
            raise Unauthorized("/metrics needs 'Authorization: Bearer <MLMARKET_METRICS_TOKEN>'")
        await _refresh_gauges(app)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


def serve_app() -> FastAPI:
    """The app of one worker process of ``mlmarket serve`` with ``MLMARKET_API_WORKERS`` above 1."""
    from app.core.logging import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)


LEDGER_VERIFY_EVERY_SECONDS = 300.0
LEDGER_FIRST_VERIFY_SECONDS = 30.0


def uvicorn_proxy_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's proxy settings: X-Forwarded-* believed only from MLMARKET_FORWARDED_ALLOW_IPS (none by default),
    so a client cannot choose the address its sign-ins are throttled under."""
    allowed = settings.forwarded_allow_ips.strip()
    return {"proxy_headers": bool(allowed), "forwarded_allow_ips": allowed or "127.0.0.1"}


def _bearer_matches(request: Request, token: str) -> bool:
    scheme, value = get_authorization_scheme_param(request.headers.get("authorization"))
    return scheme.lower() == "bearer" and hmac.compare_digest(value.encode(), token.encode())


async def _refresh_gauges(app: FastAPI) -> None:
    """Tasks by status, queue depth and unsent outbox rows, for a scrape (cheap reads only: the ledger check runs
    on its own schedule, see _verify_ledger_periodically).

    A part that cannot be read now keeps its last value; the scrape itself never fails.
    """

    def from_database() -> None:
        with Session(app.state.engine) as session:
            for status, count in predictions.count_by_status(session).items():
                metrics_.TASKS_BY_STATUS.labels(status).set(count)
        metrics_.OUTBOX_UNSENT.set(app.state.relay.unsent_count())

    try:
        await asyncio.to_thread(from_database)
    except Exception as exc:
        log.warning("metrics: cannot read the database (%s)", type(exc).__name__)
    for queue in (PREDICT_QUEUE, dead_queue(PREDICT_QUEUE)):
        try:
            depth = await asyncio.wait_for(app.state.broker.queue_depth(queue), timeout=2)
            metrics_.QUEUE_DEPTH.labels(queue).set(depth)
        except Exception as exc:
            log.warning("metrics: cannot read the depth of %s (%s: %s)", queue, type(exc).__name__, exc)


async def _verify_ledger_periodically(app: FastAPI) -> None:
    """The full ledger check behind the ledger gauges, every few minutes in the background: never on a scrape."""

    def verify() -> None:
        with Session(app.state.engine) as session:
            report = ledger.verify(session)
        problems = len(report.mismatches) + report.running_balance_errors + len(report.hold_errors)
        metrics_.LEDGER_MISMATCHES.set(problems)
        metrics_.LEDGER_VERIFIED.set_to_current_time()
        app.state.ledger_verified_at = time.time()

    await asyncio.sleep(LEDGER_FIRST_VERIFY_SECONDS)
    while True:
        try:
            await asyncio.to_thread(verify)
        except Exception as exc:
            log.warning("metrics: cannot verify the ledger (%s)", type(exc).__name__)
        await asyncio.sleep(LEDGER_VERIFY_EVERY_SECONDS)


async def _requeue_open_tasks(app: FastAPI) -> None:
    """The embedded queue lives in memory: after a restart, hand every unfinished task to it again."""

    def open_ids() -> list[str]:
        with Session(app.state.engine) as session:
            return predictions.open_task_ids(session)

    while True:
        try:
            task_ids = await asyncio.to_thread(open_ids)
            break
        except Exception as exc:  # the database may still be starting
            log.warning("cannot list unfinished tasks yet (%s); retrying", exc)
            await asyncio.sleep(WORKER_START_RETRY_SECONDS)
    for task_id in task_ids:
        await app.state.broker.publish(PREDICT_QUEUE, {"task_id": task_id}, message_id=task_id)
    for message in await asyncio.to_thread(_pending_webhooks, app):
        await app.state.broker.publish(WEBHOOK_QUEUE, message, message_id=message["task_id"])


def _pending_webhooks(app: FastAPI) -> list[dict[str, Any]]:
    with read_session(app.state.engine) as session:
        return webhooks.pending_messages(session)


async def _start_webhook_worker(app: FastAPI) -> None:
    while True:
        try:
            await app.state.webhook_worker.start(app.state.broker)
            return
        except Exception as exc:
            log.warning("in-process webhook worker cannot consume yet (%s); retrying", exc)
            await asyncio.sleep(WORKER_START_RETRY_SECONDS)


async def _start_worker(app: FastAPI) -> None:
    while True:
        try:
            await app.state.worker.start(app.state.broker)
            return
        except Exception as exc:
            log.warning("in-process worker cannot consume yet (%s); retrying", exc)
            await asyncio.sleep(WORKER_START_RETRY_SECONDS)
