"""The prediction worker, shared by ``python -m ml_worker`` and the embedded mode inside the API."""

from __future__ import annotations

import asyncio
import logging
import time

from sqlalchemy.engine import Engine
from sqlmodel import Session

from app.core.config import Settings
from app.models.catalog import ModelVersion
from app.queue.base import PREDICT_QUEUE, Broker, ConsumerOptions, Delivery
from app.runtime.cache import ModelCache
from app.services import catalog, predictions
from ml_worker import metrics

log = logging.getLogger("mlmarket.worker")


class PredictionWorker:
    def __init__(self, settings: Settings, engine: Engine, cache: ModelCache) -> None:
        self.settings = settings
        self.engine = engine
        self.cache = cache
        self.processed = 0

    def run_task(self, task_id: str) -> str:
        """Runs one task to completion. Raises when it should be retried."""
        with Session(self.engine, expire_on_commit=False) as session:
            task = predictions.start(session, task_id)
            if task is None:
                log.info("task %s is unknown or already finished; ignoring the message", task_id)
                return "ignored"
            model = session.get(ModelVersion, task.model_version_id)
            if model is None:
                predictions.fail(session, task_id=task_id, reason="the model of this task no longer exists")
                return "failed"
            runtime = self.cache.get(catalog.artifact_ref(model))
            results = runtime.predict(list(task.input_rows))
            done = predictions.complete(
                session,
                task_id=task_id,
                results=list(results),
                author_share_percent=self.settings.author_share_percent,
            )
        self.processed += 1
        return "succeeded" if done else "ignored"

    def fail_task(self, task_id: str, reason: str) -> None:
        with Session(self.engine, expire_on_commit=False) as session:
            if predictions.fail(session, task_id=task_id, reason=reason):
                log.warning("task %s failed and was refunded: %s", task_id, reason)

    async def handle(self, delivery: Delivery) -> None:
        task_id = delivery.payload.get("task_id")
        if not isinstance(task_id, str) or not task_id:
            log.error("message %s has no task id; dropping it", delivery.message_id)
            metrics.TASKS.labels(delivery.queue, "malformed").inc()
            return
        started = time.perf_counter()
        try:
            outcome = await asyncio.to_thread(self.run_task, task_id)
        except Exception:
            metrics.TASKS.labels(delivery.queue, "error").inc()
            raise
        metrics.TASKS.labels(delivery.queue, outcome).inc()
        if outcome != "ignored":
            metrics.TASK_SECONDS.labels(delivery.queue).observe(time.perf_counter() - started)

    async def on_dead(self, delivery: Delivery, reason: str) -> None:
        task_id = delivery.payload.get("task_id")
        if isinstance(task_id, str) and task_id:
            await asyncio.to_thread(self.fail_task, task_id, f"gave up after {delivery.attempt} attempts: {reason}")
            metrics.TASKS.labels(delivery.queue, "dead_lettered").inc()

    async def start(self, broker: Broker) -> None:
        await broker.consume(PREDICT_QUEUE, self.handle, self.on_dead, ConsumerOptions.from_settings(self.settings))
