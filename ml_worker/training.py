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
import random
import socket
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine
from sqlmodel import Session

from app.core.config import Settings
from app.core.errors import Unprocessable
from app.models.dataset import DatasetVersion
from app.models.task import TaskStatus
from app.models.training import TrainingJob
from app.queue.base import TRAIN_QUEUE, Broker, ConsumerOptions, Delivery
from app.runtime.algorithms import Task
from app.runtime.dataset import parse_csv
from app.services import compiling, datasets, training, training_leases, training_shards
from app.store import gc
from app.store.base import ArtifactRef, ArtifactStore
from app.store.dvc_store import DvcStore
from ml_worker import metrics
from ml_worker.heartbeat import LeaseKeeper

if TYPE_CHECKING:
    import pandas as pd

    from app.runtime.evaluation import TrainResult

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
        self._gc: asyncio.Task[None] | None = None

    def _progress(self, job_id: str, percent: int, stage: str) -> None:
        with Session(self.engine) as session:
            training_leases.progress(session, job_id, percent, stage)

    def _lease(self, job_id: str, shard_id: str | None = None) -> LeaseKeeper:
        """Keeps this worker's lease on the job (or shard, or merge) while the block runs."""
        seconds = self.settings.training_lease_seconds

        def renew() -> bool:
            with Session(self.engine) as session:
                return training_leases.renew(
                    session, job_id=job_id, worker=self.name, lease_seconds=seconds, shard_id=shard_id
                )

        return LeaseKeeper(renew, seconds, name=f"training job {job_id}" + (f" shard {shard_id}" if shard_id else ""))

    def _fail(self, job_id: str, reason: str, shard_id: str | None = None) -> bool:
        """Fails and refunds the job (once), then removes its files from the store, best effort."""
        with Session(self.engine, expire_on_commit=False) as session:
            failed = training_leases.fail(session, job_id=job_id, reason=reason, shard_id=shard_id)
        if failed:
            log.warning("training job %s failed and was refunded: %s", job_id, reason)
            self._discard(job_id)
        return failed

    def _discard(self, job_id: str, *also: ArtifactRef | None) -> None:
        """Removes the files of ``job_id`` nothing uses (those of a failed job) and ``also`` (files this worker
        stored but could not record), unless something else uses them. Best effort: the store sweep is the net."""
        try:
            with Session(self.engine) as session:
                training.discard_files(session, self.store, job_id, also=[r for r in also if r is not None])
        except Exception as exc:
            log.warning("could not remove the files of training job %s (%s: %s)", job_id, type(exc).__name__, exc)

    def run_job(self, job_id: str) -> str:
        """Runs one job to completion. Raises when it should be retried."""
        from app.runtime.training import train  # scikit-learn: imported by the first job, not with the API

        started = time.perf_counter()
        with Session(self.engine, expire_on_commit=False) as session:
            job = training_leases.start(
                session,
                job_id,
                worker=self.name,
                lease_seconds=self.settings.training_lease_seconds,
                max_takes=training_leases.max_takes(self.settings),
            )
            if job is None:
                log.info("training job %s is unknown, finished or held by a live worker; ignoring it", job_id)
                return "ignored"
            if job.status == TaskStatus.failed.value:
                # Taken too often: workers died on it again and again (the take failed and refunded it).
                log.warning("training job %s failed and was refunded: %s", job_id, job.error)
                self._discard(job_id)
                return "failed"
            try:
                version = training_leases.dataset_version_of(session, job)
            except Unprocessable as exc:
                self._fail(job_id, exc.detail)
                return "failed"
        with self._lease(job_id):
            text = datasets.read_text(self.store, version)
            try:
                frame = parse_csv(text, job.target, datasets.limits(self.settings)).frame
                self._progress(job_id, 20, "training")
                task: Task = "classification" if job.task == "classification" else "regression"
                result = train(
                    frame, job.target, job.algorithm, job.hyperparameters, task, job.test_size, job.random_state
                )
            except Unprocessable as exc:
                self._fail(job_id, exc.detail)
                return "failed"
            self._progress(job_id, 85, "saving the model")
            ref, compiled = self._save(job_id, job.task, result)
            with Session(self.engine, expire_on_commit=False) as session:
                done = training_leases.complete(
                    session,
                    job_id=job_id,
                    result=result,
                    artifact=ref,
                    duration_seconds=time.perf_counter() - started,
                    compiled=compiled,
                    worker=self.name,
                )
        if not done:
            # Failed meanwhile, or taken over after this worker's lease ran out: its files are not the job's.
            self._discard(job_id, ref, compiled.onnx)
            return "ignored"
        self.processed += 1
        return "succeeded"

    def run_shard(self, job_id: str, shard_id: str) -> str:
        """Trains one shard of a sharded job; the worker that finishes the last shard merges them.

        Raises when it should be retried. A redelivered message for a shard that already succeeded only
        checks whether the merge is still to be done.
        """
        from app.runtime.model import save_artifact
        from app.runtime.sharding import train_shard

        started = time.perf_counter()
        lease_seconds = self.settings.training_lease_seconds
        with Session(self.engine, expire_on_commit=False) as session:
            take = training_shards.start_shard(
                session,
                job_id=job_id,
                shard_id=shard_id,
                worker=self.name,
                lease_seconds=lease_seconds,
                max_takes=training_leases.max_takes(self.settings),
            )
            if take is None:
                log.info("shard %s of training job %s is unknown or its job finished; ignoring it", shard_id, job_id)
                return "ignored"
            if take.gave_up:
                log.warning("training job %s failed and was refunded: %s", job_id, take.shard.error)
                self._discard(job_id)
                return "failed"
            shard = take.shard
            job = session.get(TrainingJob, job_id)
            try:
                version = training_leases.dataset_version_of(session, job) if job is not None else None
            except Unprocessable as exc:
                self._fail(job_id, exc.detail, shard_id)
                return "failed"
        if job is None or version is None:
            return "ignored"
        if not take.taken and shard.status != TaskStatus.succeeded.value:
            log.info("shard %s of training job %s is trained by a live worker; ignoring it", shard_id, job_id)
            return "ignored"
        task: Task = "classification" if job.task == "classification" else "regression"
        frame: pd.DataFrame | None = None
        outcome = "ignored"
        if take.taken:
            with self._lease(job_id, shard_id):
                try:
                    frame = parse_csv(datasets.read_text(self.store, version), job.target, self.limits).frame
                    result = train_shard(
                        frame, job.target, job.algorithm, job.hyperparameters, task, job.test_size,
                        job.random_state, job.shards, shard.index,
                    )  # fmt: skip
                except Unprocessable as exc:
                    self._fail(job_id, f"shard {shard.index + 1}: {exc.detail}", shard_id)
                    return "failed"
                with tempfile.TemporaryDirectory(prefix="mlmarket-shard-") as tmp:
                    path = Path(tmp) / "shard.skops"
                    save_artifact(result.pipeline, path, result.features)
                    ref = self.store.put(path, f"training/{job_id}/shard-{shard.index}.skops")
                with Session(self.engine) as session:
                    recorded = training_shards.complete_shard(
                        session,
                        shard_id=shard_id,
                        rows=result.rows,
                        artifact=ref,
                        duration_seconds=time.perf_counter() - started,
                        worker=self.name,
                    )
            if not recorded:
                self._discard(job_id, ref)
                return "ignored"
            with Session(self.engine) as session:
                training_shards.note_shard_progress(session, job_id)
            self.processed += 1
            outcome = "succeeded"
        with Session(self.engine, expire_on_commit=False) as session:
            claimed = training_shards.claim_merge(
                session,
                job_id,
                worker=self.name,
                lease_seconds=lease_seconds,
                max_takes=training_leases.max_takes(self.settings),
            )
        if claimed is None:
            return outcome
        if claimed.status == TaskStatus.failed.value:
            log.warning("training job %s failed and was refunded: %s", job_id, claimed.error)
            self._discard(job_id)
            return "failed"
        try:
            with self._lease(job_id):
                done = self.merge(job, version, frame, started)
        except Unprocessable as exc:
            self._fail(job_id, exc.detail)
            return "failed"
        except BaseException:
            with Session(self.engine) as session:
                training_shards.release_merge(session, job_id, worker=self.name)
            raise
        return "succeeded" if done else "ignored"

    def merge(self, job: TrainingJob, version: DatasetVersion, frame: pd.DataFrame | None, started: float) -> bool:
        """The finalizer: merges the shards' models, evaluates the result, stores it and settles the charge."""
        from app.runtime.model import ModelRuntime
        from app.runtime.sharding import ShardResult, merge_shards

        with Session(self.engine, expire_on_commit=False) as session:
            shards = training_shards.shards_of(session, job.id)
        refs = [training_shards.shard_ref(s) for s in shards]
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
            done = training_leases.complete(
                session,
                job_id=job.id,
                result=result,
                artifact=ref,
                duration_seconds=duration,
                compiled=compiled,
                worker=self.name,
            )
        if done:
            log.info("merged %d shards of training job %s", len(shards), job.id)
        else:
            self._discard(job.id, ref, compiled.onnx)
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
        self._fail(job_id, reason, shard_id)

    def collect_garbage(self) -> int:
        """One pass of the store sweep (see app.store.gc); returns how many objects it removed."""
        with Session(self.engine) as session:
            sweep = gc.collect(session, self.store, grace_seconds=self.settings.store_gc_grace_seconds, dry_run=False)
        return len(sweep.removed)

    async def collect_garbage_periodically(self) -> None:
        interval = self.settings.store_gc_interval_seconds
        while True:
            # Spread over the interval, so several workers started together do not sweep together.
            await asyncio.sleep(interval * random.uniform(0.5, 1.5))  # noqa: S311 - not for security
            try:
                await asyncio.to_thread(self.collect_garbage)
            except Exception as exc:
                log.warning("the store sweep failed (%s: %s); trying again later", type(exc).__name__, exc)

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
        if self.settings.store_gc_interval_seconds > 0 and isinstance(self.store, DvcStore) and self._gc is None:
            self._gc = asyncio.create_task(self.collect_garbage_periodically())

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
