"""The prediction worker, shared by ``python -m ml_worker`` and the embedded mode inside the API."""

from __future__ import annotations

import asyncio
import logging
import time

from sqlalchemy.engine import Engine
from sqlmodel import Session

from app.core.config import Settings
from app.core.logging import REQUEST_ID_HEADER, reset_request_id, set_request_id
from app.models.catalog import ModelVersion
from app.queue.base import PREDICT_QUEUE, Broker, ConsumerOptions, Delivery
from app.runtime.cache import ModelCache
from app.services import oip, predictions
from app.services.dataplane import ServedModel, load_predictor
from ml_worker import metrics

log = logging.getLogger("mlmarket.worker")
# Deliveries beyond task_max_attempts a task may have (redeliveries after a worker died, duplicates) before it
# is failed and refunded instead of run again: a task that kills every worker that takes it cannot loop forever.
CRASH_ALLOWANCE = 5


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
            if task.attempts > self.settings.task_max_attempts + CRASH_ALLOWANCE:
                # Deliveries the retry count never saw: workers died on this task again and again.
                predictions.fail(
                    session, task_id=task_id, reason=f"the task stopped its worker {task.attempts - 1} times"
                )
                return "failed"
            model = session.get(ModelVersion, task.model_version_id)
            if model is None:
                predictions.fail(session, task_id=task_id, reason="the model of this task no longer exists")
                return "failed"
            served = ServedModel.of(model, [])
            predictor = load_predictor(self.cache, served)
            rows = list(task.input_rows)
            predicted = predictor.predict_columns(oip.columns_of_rows(rows, served.features), len(rows))
            done = predictions.complete(
                session,
                task_id=task_id,
                results=oip.json_values(predicted),
                author_share_percent=self.settings.author_share_percent,
            )
        self.processed += 1
        return "succeeded" if done else "ignored"

    def fail_task(self, task_id: str, reason: str) -> None:
        with Session(self.engine, expire_on_commit=False) as session:
            if predictions.fail(session, task_id=task_id, reason=reason):
                log.warning("task %s failed and was refunded: %s", task_id, reason)

    async def handle(self, delivery: Delivery) -> None:
        # The request id of the HTTP request that created the task: every log line of this task carries it.
        token = set_request_id(task_request_id(delivery))
        try:
            await self._handle(delivery)
        finally:
            reset_request_id(token)

    async def _handle(self, delivery: Delivery) -> None:
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
            seconds = time.perf_counter() - started
            metrics.TASK_SECONDS.labels(delivery.queue).observe(seconds)
            log.info("task %s %s in %.3fs", task_id, outcome, seconds, extra={"task_id": task_id, "outcome": outcome})

    async def on_dead(self, delivery: Delivery, reason: str) -> None:
        task_id = delivery.payload.get("task_id")
        if isinstance(task_id, str) and task_id:
            token = set_request_id(task_request_id(delivery))
            try:
                await asyncio.to_thread(self.fail_task, task_id, f"gave up after {delivery.attempt} attempts: {reason}")
            finally:
                reset_request_id(token)
            metrics.TASKS.labels(delivery.queue, "dead_lettered").inc()

    async def start(self, broker: Broker) -> None:
        await broker.consume(PREDICT_QUEUE, self.handle, self.on_dead, ConsumerOptions.from_settings(self.settings))


def task_request_id(delivery: Delivery) -> str | None:
    value = delivery.headers.get(REQUEST_ID_HEADER) or delivery.payload.get("request_id")
    return str(value) if value else None
