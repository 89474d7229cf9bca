"""The training worker: takes jobs from ``tasks.train``, trains on the dataset version, stores the model through DVC.

Same reliability rules as predictions: the result and the settlement commit
before the ack; a job that keeps failing is dead-lettered, marked failed and
refunded once. A job the data or the hyperparameters make impossible (a 422)
fails at once and is refunded: retrying would not help.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine
from sqlmodel import Session

from app.core.config import Settings
from app.core.errors import Unprocessable
from app.models.task import TaskStatus
from app.models.training import DatasetVersion, TrainingJob
from app.queue.base import TRAIN_QUEUE, Broker, ConsumerOptions, Delivery
from app.runtime.algorithms import Task
from app.runtime.dataset import parse_csv
from app.services import compiling, datasets, training
from app.store.base import ArtifactRef, ArtifactStore
from ml_worker import metrics

if TYPE_CHECKING:
    import pandas as pd

    from app.runtime.training import TrainResult

log = logging.getLogger("mlmarket.worker")


class TrainingWorker:
    queue = TRAIN_QUEUE

    def __init__(self, settings: Settings, engine: Engine, store: ArtifactStore) -> None:
        self.settings = settings
        self.engine = engine
        self.store = store
        self.processed = 0
        self.current_task: str | None = None
        # The name the heartbeat lists, recorded on the shards this worker trains.
        self.name = f"{socket.gethostname()}-{os.getpid()}"
        self.limits = datasets.limits(settings)

    def _progress(self, job_id: str, percent: int, stage: str) -> None:
        with Session(self.engine) as session:
            training.progress(session, job_id, percent, stage)

    def run_job(self, job_id: str) -> str:
        """Runs one job to completion. Raises when it should be retried."""
        from app.runtime.training import train  # scikit-learn: imported by the first job, not with the API

        started = time.perf_counter()
        with Session(self.engine, expire_on_commit=False) as session:
            job = training.start(session, job_id)
            if job is None:
                log.info("training job %s is unknown or already finished; ignoring the message", job_id)
                return "ignored"
            try:
                version = training.dataset_version_of(session, job)
            except Unprocessable as exc:
                training.fail(session, job_id=job_id, reason=exc.detail)
                return "failed"
        text = datasets.read_text(self.store, version)
        try:
            frame = parse_csv(text, job.target, datasets.limits(self.settings)).frame
            self._progress(job_id, 20, "training")
            task: Task = "classification" if job.task == "classification" else "regression"
            result = train(frame, job.target, job.algorithm, job.hyperparameters, task, job.test_size, job.random_state)
        except Unprocessable as exc:
            with Session(self.engine) as session:
                training.fail(session, job_id=job_id, reason=exc.detail)
            return "failed"
        self._progress(job_id, 85, "saving the model")
        ref, compiled = self._save(job_id, job.task, result)
        with Session(self.engine, expire_on_commit=False) as session:
            done = training.complete(
                session,
                job_id=job_id,
                result=result,
                artifact=ref,
                duration_seconds=time.perf_counter() - started,
                compiled=compiled,
            )
        self.processed += 1
        return "succeeded" if done else "ignored"

    def run_shard(self, job_id: str, shard_id: str) -> str:
        """Trains one shard of a sharded job; the worker that finishes the last shard merges them.

        Raises when it should be retried. A redelivered message for a shard that already succeeded only
        checks whether the merge is still to be done.
        """
        from app.runtime.model import save_artifact
        from app.runtime.training import train_shard

        started = time.perf_counter()
        with Session(self.engine, expire_on_commit=False) as session:
            shard = training.start_shard(session, job_id=job_id, shard_id=shard_id, worker=self.name)
            if shard is None:
                log.info("shard %s of training job %s is unknown or its job finished; ignoring it", shard_id, job_id)
                return "ignored"
            job = session.get(TrainingJob, job_id)
            try:
                version = training.dataset_version_of(session, job) if job is not None else None
            except Unprocessable as exc:
                training.fail(session, job_id=job_id, reason=exc.detail, shard_id=shard_id)
                return "failed"
        if job is None or version is None:
            return "ignored"
        task: Task = "classification" if job.task == "classification" else "regression"
        frame: pd.DataFrame | None = None
        outcome = "ignored"
        if shard.status == TaskStatus.running.value:
            try:
                frame = parse_csv(datasets.read_text(self.store, version), job.target, self.limits).frame
                result = train_shard(
                    frame, job.target, job.algorithm, job.hyperparameters, task, job.test_size,
                    job.random_state, job.shards, shard.index,
                )  # fmt: skip
            except Unprocessable as exc:
                with Session(self.engine) as session:
                    reason = f"shard {shard.index + 1}: {exc.detail}"
                training.fail(session, job_id=job_id, reason=reason, shard_id=shard_id)
                return "failed"
            with tempfile.TemporaryDirectory(prefix="mlmarket-shard-") as tmp:
                path = Path(tmp) / "shard.skops"
                save_artifact(result.pipeline, path, result.features)
                ref = self.store.put(path, f"training/{job_id}/shard-{shard.index}.skops")
            with Session(self.engine) as session:
                if not training.complete_shard(
                    session,
                    shard_id=shard_id,
                    rows=result.rows,
                    artifact=ref,
                    duration_seconds=time.perf_counter() - started,
                ):
                    return "ignored"
                training.note_shard_progress(session, job_id)
            self.processed += 1
            outcome = "succeeded"
        with Session(self.engine) as session:
            if not training.claim_merge(session, job_id):
                return outcome
        try:
            done = self.merge(job, version, frame, started)
        except Unprocessable as exc:
            with Session(self.engine) as session:
                training.fail(session, job_id=job_id, reason=exc.detail)
            return "failed"
        except BaseException:
            with Session(self.engine) as session:
                training.release_merge(session, job_id)
            raise
        return "succeeded" if done else "ignored"

    def merge(self, job: TrainingJob, version: DatasetVersion, frame: pd.DataFrame | None, started: float) -> bool:
        """The finalizer: merges the shards' models, evaluates the result, stores it and settles the charge."""
        from app.runtime.model import ModelRuntime
        from app.runtime.training import ShardResult, merge_shards

        with Session(self.engine, expire_on_commit=False) as session:
            shards = training.shards_of(session, job.id)
        refs = [training.shard_ref(s) for s in shards]
        if any(ref is None for ref in refs):
            raise Unprocessable("a shard of this job has no model file")
        parts = []
        for shard, ref in zip(shards, refs, strict=True):
            assert ref is not None  # noqa: S101 - checked above
            estimator = ModelRuntime.load(self.store.fetch(ref)).estimator
            parts.append(ShardResult(pipeline=estimator, rows=shard.rows, fit_seconds=shard.duration_seconds or 0.0))
        if frame is None:
            frame = parse_csv(datasets.read_text(self.store, version), job.target, self.limits).frame
        task: Task = "classification" if job.task == "classification" else "regression"
        result = merge_shards(frame, job.target, job.algorithm, task, job.test_size, job.random_state, parts)
        self._progress(job.id, 95, "saving the model")
        ref, compiled = self._save(job.id, job.task, result)
        with Session(self.engine, expire_on_commit=False) as session:
            duration = sum(s.duration_seconds or 0.0 for s in shards) + (time.perf_counter() - started)
            done = training.complete(
                session, job_id=job.id, result=result, artifact=ref, duration_seconds=duration, compiled=compiled
            )
        if done:
            log.info("merged %d shards of training job %s", len(shards), job.id)
        return done

    def _save(self, job_id: str, task: str, result: TrainResult) -> tuple[ArtifactRef, compiling.Compiled]:
        """The trained pipeline as a skops artifact, and compiled to ONNX when it answers like the pipeline."""
        from app.runtime.model import save_artifact

        with tempfile.TemporaryDirectory(prefix="mlmarket-training-") as tmp:
            path = Path(tmp) / "model.skops"
            save_artifact(result.pipeline, path, result.features)
            ref = self.store.put(path, f"training/{job_id}/model.skops")
        compiled = compiling.compile_and_store(
            self.store, result.pipeline, result.features, task, result.holdout, f"training/{job_id}/model.onnx"
        )
        return ref, compiled

    def fail_job(self, job_id: str, reason: str, shard_id: str | None = None) -> None:
        with Session(self.engine, expire_on_commit=False) as session:
            if training.fail(session, job_id=job_id, reason=reason, shard_id=shard_id):
                log.warning("training job %s failed and was refunded: %s", job_id, reason)

    async def handle(self, delivery: Delivery) -> None:
        job_id = delivery.payload.get("task_id")
        shard_id = delivery.payload.get("shard_id")
        if not isinstance(job_id, str) or not job_id or not isinstance(shard_id, str | None):
            log.error("message %s has no job id; dropping it", delivery.message_id)
            metrics.TASKS.labels(delivery.queue, "malformed").inc()
            return
        started = time.perf_counter()
        self.current_task = job_id
        try:
            if shard_id:
                outcome = await asyncio.to_thread(self.run_shard, job_id, shard_id)
            else:
                outcome = await asyncio.to_thread(self.run_job, job_id)
        except Exception:
            metrics.TASKS.labels(delivery.queue, "error").inc()
            raise
        finally:
            self.current_task = None
        metrics.TASKS.labels(delivery.queue, outcome).inc()
        if outcome != "ignored":
            metrics.TASK_SECONDS.labels(delivery.queue).observe(time.perf_counter() - started)

    async def on_dead(self, delivery: Delivery, reason: str) -> None:
        job_id = delivery.payload.get("task_id")
        shard_id = delivery.payload.get("shard_id")
        if isinstance(job_id, str) and job_id:
            reason = f"gave up after {delivery.attempt} attempts: {reason}"
            if isinstance(shard_id, str) and shard_id:
                await asyncio.to_thread(self.fail_job, job_id, reason, shard_id)
            else:
                await asyncio.to_thread(self.fail_job, job_id, reason)
            metrics.TASKS.labels(delivery.queue, "dead_lettered").inc()

    async def requeue_open_jobs(self, broker: Broker) -> None:
        """For the in-memory embedded queue after a restart: hand every unfinished job to it again."""

        def open_messages() -> list[tuple[str, dict[str, Any]]]:
            with Session(self.engine) as session:
                return training.open_job_messages(session)

        for message_id, payload in await asyncio.to_thread(open_messages):
            await broker.publish(TRAIN_QUEUE, payload, message_id=message_id)

    async def start(self, broker: Broker) -> None:
        # One job at a time per worker: training is CPU-bound, and the next job waits for a free worker.
        options = dataclasses.replace(ConsumerOptions.from_settings(self.settings), prefetch=1)
        await broker.consume(TRAIN_QUEUE, self.handle, self.on_dead, options)

    async def run_in_process(self, broker: Broker, *, requeue: bool, retry_seconds: float = 2.0) -> None:
        """Starts consuming inside the API process, retrying until the broker answers."""
        while True:
            try:
                await self.start(broker)
                break
            except Exception as exc:
                log.warning("in-process training worker cannot consume yet (%s); retrying", exc)
                await asyncio.sleep(retry_seconds)
        while requeue:
            try:
                await self.requeue_open_jobs(broker)
                return
            except Exception as exc:  # the database may still be starting
                log.warning("cannot list unfinished training jobs yet (%s); retrying", exc)
                await asyncio.sleep(retry_seconds)
