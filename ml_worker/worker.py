"""The prediction worker, shared by ``python -m ml_worker`` and the embedded mode inside the API.

Messages are consumed with a prefetch window; every task message that arrives
while the last batch is being run joins the next one. A batch is started in
one statement, predicted with one call per model (big inputs in chunks, one
per core), and its results stored and charges settled in one transaction;
each message is acknowledged only after that commit. Each message keeps its
own fate: a task that cannot run raises for its message alone, which the
broker retries and dead-letters on its own count.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from app.core.config import Settings
from app.core.logging import REQUEST_ID_HEADER, reset_request_id, set_request_id
from app.models.catalog import ModelVersion
from app.queue.base import PREDICT_QUEUE, Broker, ConsumerOptions, Delivery
from app.runtime.batching import Coalescer
from app.runtime.cache import ModelCache
from app.services import billing, tabular, task_runs
from app.services.billing import Predictor
from app.services.dataplane import ServedModel, load_predictor
from ml_worker import metrics

log = logging.getLogger("mlmarket.worker")
# Deliveries beyond task_max_attempts a task may have (redeliveries after a worker died, duplicates) before it
# is failed and refunded instead of run again: a task that kills every worker that takes it cannot loop forever.
CRASH_ALLOWANCE = 5
# Inputs at least this long are predicted in chunks, one per core, at the same time.
CHUNK_MIN_ROWS = 4096


class TaskError(RuntimeError):
    """A task of a batch could not be run; its message is retried (or dead-lettered) on its own."""


class PredictionWorker:
    def __init__(self, settings: Settings, engine: Engine, cache: ModelCache) -> None:
        self.settings = settings
        self.engine = engine
        self.cache = cache
        self.processed = 0
        self.cores = max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
        self._pool = ThreadPoolExecutor(self.cores, thread_name_prefix="predict") if self.cores > 1 else None
        self.batches: Coalescer[str, str] = Coalescer(self.run_tasks, max_items=max(1, settings.worker_prefetch))
        self._versions: dict[int, tuple[ServedModel, float]] = {}

    def run_task(self, task_id: str) -> str:
        """Runs one task to completion. Raises when it should be retried."""
        (outcome,) = self.run_tasks([task_id])
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def run_tasks(self, task_ids: list[str]) -> list[str | BaseException]:
        """Runs a batch of tasks: "succeeded", "failed" (refunded) or "ignored" per task, or the error for
        which that task's message is retried."""
        unique = list(dict.fromkeys(task_ids))
        started = {s.id: s for s in task_runs.start_many(self.engine, unique)}
        outcome: dict[str, str | BaseException] = {t: "ignored" for t in unique if t not in started}
        for task_id in unique:
            if task_id not in started:
                log.info("task %s is unknown or already finished; ignoring the message", task_id)
        runnable: dict[int, list[task_runs.Started]] = defaultdict(list)
        for task in started.values():
            if task.attempts > self.settings.task_max_attempts + CRASH_ALLOWANCE:
                # Deliveries the retry count never saw: workers died on this task again and again.
                outcome[task.id] = self._fail(task.id, f"the task stopped its worker {task.attempts - 1} times")
            else:
                runnable[task.model_version_id].append(task)
        models = self._models(list(runnable))
        done: list[task_runs.Done] = []
        for version_id, tasks in runnable.items():
            model = models.get(version_id)
            if model is None:
                for task in tasks:
                    outcome[task.id] = self._fail(task.id, "the model of this task no longer exists")
                continue
            for task, predicted in self._predict(model, tasks):
                if isinstance(predicted, billing.NoProbabilities):
                    outcome[task.id] = self._fail(task.id, predicted.detail)
                elif isinstance(predicted, BaseException):
                    outcome[task.id] = predicted
                else:
                    done.append(task_runs.Done(task.id, predicted[0], model.owner_id, predicted[1]))
        if done:
            settled = task_runs.complete_many(
                self.engine, done, author_share_percent=self.settings.author_share_percent
            )
            for d in done:
                outcome[d.task_id] = "succeeded" if d.task_id in settled else "ignored"
            self.processed += len(settled)
        return [outcome[t] for t in task_ids]

    def _models(self, version_ids: list[int]) -> dict[int, ServedModel]:
        """The catalog versions of a batch, remembered for ``catalog_cache_seconds`` (a version's artifact never
        changes; a compiled copy added later is picked up when the entry expires)."""
        now = time.monotonic()
        out = {v: entry[0] for v in version_ids if (entry := self._versions.get(v)) is not None and entry[1] > now}
        missing = [v for v in version_ids if v not in out]
        if missing:
            with Session(self.engine) as session:
                versions = session.exec(select(ModelVersion).where(col(ModelVersion.id).in_(missing))).all()
                for version in versions:
                    served = ServedModel.of(version, [])
                    out[served.id] = served
                    self._versions[served.id] = (served, now + self.settings.catalog_cache_seconds)
        return out

    def _predict(self, model: ServedModel, tasks: list[task_runs.Started]) -> list[tuple[task_runs.Started, Any]]:
        """One predict call for the tasks of one model (with the class probabilities when a task asked for
        them); should it fail, each task alone, so that only a task at fault fails. Per task: its predictions and
        stored probabilities (or None), or the error."""
        try:
            predictor = load_predictor(self.cache, model)
            columns = [tabular.unpack_columns(t.inputs, model.features) for t in tasks]
        except Exception as exc:
            log.exception("cannot load model %s v%s", model.name, model.version)
            return [(t, TaskError(f"the model could not be loaded: {type(exc).__name__}: {exc}")) for t in tasks]
        if len(tasks) > 1:
            try:
                joined = {f.name: np.concatenate([c[f.name] for c in columns]) for f in model.features}
                asked = any(t.wants_probabilities for t in tasks)
                predicted = self._predict_rows(predictor, joined, sum(t.rows for t in tasks), asked)
                out: list[tuple[task_runs.Started, Any]] = []
                offset = 0
                for task in tasks:
                    out.append((task, _part(predicted, offset, task)))
                    offset += task.rows
                return out
            except Exception:
                log.warning("predicting %d tasks of %s together failed; predicting each alone", len(tasks), model.name)
        alone: list[tuple[task_runs.Started, Any]] = []
        for task, task_columns in zip(tasks, columns, strict=True):
            try:
                predicted = self._predict_rows(predictor, task_columns, task.rows, task.wants_probabilities)
                alone.append((task, _part(predicted, 0, task)))
            except billing.NoProbabilities as exc:
                alone.append((task, exc))
            except Exception as exc:
                log.exception("task %s: predict failed", task.id)
                alone.append((task, TaskError(f"predict failed: {type(exc).__name__}: {exc}")))
        return alone

    def _predict_rows(
        self, predictor: Predictor, columns: dict[str, np.ndarray[Any, Any]], n: int, probabilities: bool = False
    ) -> billing.Predicted:
        """``predict_columns`` (with the probabilities when asked), in one chunk per core for big inputs (the
        runtimes release the GIL)."""
        if self._pool is None or n < CHUNK_MIN_ROWS:
            predicted = billing.predict(predictor, columns, n, probabilities)
        else:
            bounds = np.linspace(0, n, self.cores + 1, dtype=int)
            parts = [
                self._pool.submit(
                    billing.predict, predictor, {k: v[a:b] for k, v in columns.items()}, int(b - a), probabilities
                )
                for a, b in itertools.pairwise(bounds)
            ]
            predicted = billing.join([p.result() for p in parts])
        if predicted.values.shape[0] != n:
            raise TaskError(f"the model gave {predicted.values.shape[0]} predictions for {n} rows")
        return predicted

    def _fail(self, task_id: str, reason: str) -> str:
        self.fail_task(task_id, reason)
        return "failed"

    def fail_task(self, task_id: str, reason: str) -> None:
        with Session(self.engine, expire_on_commit=False) as session:
            if task_runs.fail(session, task_id=task_id, reason=reason):
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
            # Runs with the tasks of the other messages that are here now; returns after the batch commits.
            outcome = await self.batches.submit(task_id)
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


def _part(predicted: billing.Predicted, offset: int, task: task_runs.Started) -> tuple[Any, bytes | None]:
    """A task's rows of a batch's predictions, and its stored probabilities when it asked for them."""
    values = predicted.values[offset : offset + task.rows]
    if not task.wants_probabilities or predicted.probabilities is None:
        return values, None
    rows = predicted.probabilities[offset : offset + task.rows]
    return values, tabular.pack_probabilities(predicted.classes or [], rows)


def task_request_id(delivery: Delivery) -> str | None:
    value = delivery.headers.get(REQUEST_ID_HEADER) or delivery.payload.get("request_id")
    return str(value) if value else None
