"""``python -m ml_worker``: a worker process for a real broker (RabbitMQ). Stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

from pydantic import ValidationError

from app.core.config import Settings
from app.core.db import make_engine
from app.core.logging import configure_logging
from app.queue.base import PREDICT_QUEUE, TRAIN_QUEUE
from app.queue.factory import make_broker
from app.runtime.cache import ModelCache
from app.store import make_store
from ml_worker.health import WorkerState, start_health_server
from ml_worker.heartbeat import Heartbeat
from ml_worker.metrics import HEARTBEAT
from ml_worker.training import TrainingWorker
from ml_worker.webhooks import WebhookWorker
from ml_worker.worker import PredictionWorker

log = logging.getLogger("mlmarket.worker")
HEARTBEAT_SECONDS = 5.0


async def serve(settings: Settings) -> None:
    engine = make_engine(settings)
    store = make_store(settings)
    cache = ModelCache(store, settings.model_cache_max_models, settings.model_cache_max_bytes)
    broker = make_broker(settings)
    # Predictions run on connections without a liveness ping per checkout: a batch whose connection turned out
    # dead fails, and its messages are retried on fresh ones.
    worker = PredictionWorker(settings, make_engine(settings, pre_ping=False), cache)
    state = WorkerState()
    health = (
        start_health_server(state, settings.worker_health_host, settings.worker_health_port)
        if settings.worker_health_port
        else None
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await broker.connect()
        await worker.start(broker)
        trainer = TrainingWorker(settings, engine, store)
        await trainer.start(broker)
        webhook_worker = WebhookWorker(settings, engine)
        await webhook_worker.start(broker)
        heartbeat = Heartbeat(engine, [PREDICT_QUEUE, TRAIN_QUEUE], [worker, trainer])
        state.consuming = True
        log.info("worker consuming (prefetch %d)", settings.worker_prefetch)
        while not stop.is_set():
            state.tick()
            HEARTBEAT.set_to_current_time()
            try:
                await broker.check_consumers()
            except Exception as exc:  # the broker may be down right now; the next heartbeat tries again
                log.warning("cannot check the consumers (%s: %s)", type(exc).__name__, exc)
            await heartbeat.beat_async()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=HEARTBEAT_SECONDS)
    finally:
        state.consuming = False
        if health is not None:
            health.shutdown()
        await broker.close()
        engine.dispose()


def main() -> int:
    try:
        settings = Settings()
    except ValidationError as exc:
        sys.exit(f"ml_worker: configuration error: {exc}")
    configure_logging(settings.log_level, settings.log_format)
    if settings.broker_url is None:
        sys.exit("ml_worker: set MLMARKET_BROKER_URL (the embedded default runs the worker inside the API)")
    asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
