"""The measurements through the mlmarket API, and the bare baselines they are compared with."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np

from bench.client import POLL_SECONDS, PREFER_WAIT_SECONDS, BenchError, User, http_client
from bench.workload import MODEL_NAME, PRICE_PER_ROW, Workload

BATCH_POLL_SECONDS = 0.005
SINGLE_ROW_REPEATS = 50


def _wall_clock(value: str | None) -> float | None:
    """A task timestamp (ISO 8601, UTC when it says no zone) as seconds since the epoch."""
    if not value:
        return None
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _between(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else end - start


def task_splits(task: dict[str, Any], sent_at: float, answered_at: float) -> dict[str, float | None]:
    """Where a task's time went, in seconds: the client's wall clock around the request and the task's own
    timestamps (the API, the worker and this process share the machine's clock).

    - submit: request sent → task created (upload, auth, row checks; ``created_at`` is taken as the charge's
      transaction begins);
    - queued: created → started (the charge's commit, the outbox, the queue, the worker taking it);
    - worker: started → finished (reading the rows, predict; ``finished_at`` is taken before the result's commit);
    - answer: finished → the client holds the finished task (the result's commit, the API noticing it, for
      ``Prefer: wait``, or the client's next poll, and the response).
    """
    created = _wall_clock(task.get("created_at"))
    started = _wall_clock(task.get("started_at"))
    finished = _wall_clock(task.get("finished_at"))
    return {
        "submit": _between(sent_at, created),
        "queued": _between(created, started),
        "worker": _between(started, finished),
        "answer": _between(finished, answered_at),
    }


SPLITS = ("submit", "queued", "worker", "answer")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def bare_predict(workload: Workload, repeats: int) -> dict[str, Any]:
    """``pipeline.predict`` of the fitted model on the same rows, in this process (frame built beforehand)."""
    frame = workload.frame
    pipeline = workload.result.pipeline
    pipeline.predict(frame.head(1))  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        pipeline.predict(frame)
        times.append(time.perf_counter() - started)
    best = statistics.median(times)
    one_row = frame.head(1)
    started = time.perf_counter()
    for _ in range(SINGLE_ROW_REPEATS):
        pipeline.predict(one_row)
    single_row_ms = (time.perf_counter() - started) / SINGLE_ROW_REPEATS * 1000
    return {
        "rows": len(frame),
        "seconds": times,
        "median_seconds": best,
        "rows_per_second": len(frame) / best,
        "single_row_ms": single_row_ms,
    }


async def batch_through_api(base_url: str, workload: Workload, repeats: int) -> dict[str, Any]:
    """One batch of all the rows per repeat, waited for as a user should (``Prefer: wait``, polling only if the
    task outlasts the wait). The JSON body is encoded beforehand."""
    rows = workload.rows
    expected = np.asarray(workload.result.pipeline.predict(workload.frame), dtype=float)
    body = json.dumps({"model": MODEL_NAME, "rows": rows}).encode()
    runs: list[dict[str, Any]] = []
    async with http_client(base_url) as client:
        user = await User.register(client, credits=PRICE_PER_ROW * (len(rows) * repeats + 1))
        # Warm-up: the worker fetches the artifact and caches the loaded model.
        warm_started = time.perf_counter()
        await user.predict(rows[:1])
        warm_up_seconds = time.perf_counter() - warm_started
        for _ in range(repeats):
            polled_before = user.polled_after_wait
            sent_at = time.time()
            started = time.perf_counter()
            task = await user.predict(body, PREFER_WAIT_SECONDS, BATCH_POLL_SECONDS)
            finished = time.perf_counter()
            answered_at = time.time()
            results = np.asarray(task["results"], dtype=float)
            if results.shape != expected.shape:
                raise BenchError(f"expected {expected.shape[0]} results, got {results.shape}")
            splits = task_splits(task, sent_at, answered_at)
            runs.append(
                {
                    "seconds": finished - started,
                    **{f"{k}_seconds": v for k, v in splits.items()},
                    "answered_within_wait": user.polled_after_wait == polled_before,
                    "results_match_bare": bool(np.allclose(results, expected, rtol=1e-9, atol=1e-9)),
                }
            )
    median = statistics.median(r["seconds"] for r in runs)
    return {
        "rows": len(rows),
        "body_bytes": len(body),
        "prefer_wait_seconds": PREFER_WAIT_SECONDS,
        "warm_up_seconds": warm_up_seconds,
        "runs": runs,
        "median_seconds": median,
        "rows_per_second": len(rows) / median,
        **{f"median_{k}_seconds": _median([r[f"{k}_seconds"] for r in runs]) for k in SPLITS},
        "results_match_bare": all(r["results_match_bare"] for r in runs),
    }


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


async def tasks_through_api(
    base_url: str, workload: Workload, tasks: int, clients: int, wait: float | None = PREFER_WAIT_SECONDS
) -> dict[str, Any]:
    """``tasks`` paid single-row predictions by ``clients`` concurrent users, one after another per user.

    With ``wait`` (seconds), each prediction is waited for as a user should: ``Prefer: wait`` on the POST, which
    answers with the finished task. With ``wait=None``, each is submitted and then polled every
    ``client.POLL_SECONDS``, as an outside tester may do.
    """
    rows = workload.rows
    latencies: list[float] = []
    posts: list[float] = []
    splits: dict[str, list[float]] = {k: [] for k in SPLITS}
    async with http_client(base_url) as client:
        users = await asyncio.gather(
            *(User.register(client, credits=PRICE_PER_ROW * (tasks + 1)) for _ in range(clients))
        )
        await users[0].predict(rows[:1], wait)  # warm-up
        users[0].polled_after_wait = 0
        next_index = 0

        async def run(user: User) -> None:
            nonlocal next_index
            while next_index < tasks:
                index = next_index
                next_index += 1
                row = [rows[index % len(rows)]]
                sent_at = time.time()
                started = time.perf_counter()
                if wait is None:
                    task_id = await user.submit(row)
                    posts.append(time.perf_counter() - started)
                    task = await user.wait(task_id)
                else:
                    task = await user.predict(row, wait)
                latencies.append(time.perf_counter() - started)
                for key, value in task_splits(task, sent_at, time.time()).items():
                    if value is not None:
                        splits[key].append(value)

        started = time.perf_counter()
        await asyncio.gather(*(run(u) for u in users))
        elapsed = time.perf_counter() - started
    summary = summarise_tasks(tasks, clients, elapsed, latencies)
    summary["waiting"] = "polling" if wait is None else f"Prefer: wait={wait:g}"
    if wait is None:
        summary["poll_seconds"] = POLL_SECONDS
        # The POST alone, until its 202.
        summary["post_p50_ms"] = percentile(posts, 50) * 1000
        summary["post_p95_ms"] = percentile(posts, 95) * 1000
    else:
        summary["answered_within_wait"] = tasks - sum(u.polled_after_wait for u in users)
    # See task_splits: submit (sent → created), queued (created → started), worker (started → finished),
    # answer (finished → the client has it).
    for key, values in splits.items():
        summary[f"{key}_p50_ms"] = percentile(values, 50) * 1000
    return summary


def summarise_tasks(tasks: int, clients: int, elapsed: float, latencies: list[float]) -> dict[str, Any]:
    return {
        "tasks": tasks,
        "clients": clients,
        "seconds": elapsed,
        "tasks_per_second": tasks / elapsed,
        "latency_p50_ms": percentile(latencies, 50) * 1000,
        "latency_p95_ms": percentile(latencies, 95) * 1000,
    }


async def one_task_per_model(base_url: str, workload: Workload) -> dict[str, Any]:
    """One paid single-row task on each of the benchmark's models, so that the worker holds them all loaded, and
    one billed Open Inference Protocol call on each, so that the API serving them holds them too."""
    models = [(MODEL_NAME, workload.rows[0])] + [(m.name, m.row) for m in workload.extra_models]
    async with http_client(base_url) as client:
        user = await User.register(client, credits=1000 * len(models))
        started = time.perf_counter()
        for name, row in models:
            await user.predict([row], model=name)
            inputs = [
                {"name": k, "shape": [1], "datatype": "BYTES" if isinstance(v, str) else "FP64", "data": [v]}
                for k, v in row.items()
            ]
            r = await client.post(f"/v2/models/{name}/infer", json={"inputs": inputs}, headers=user.headers)
            if r.status_code != 200:
                raise BenchError(f"infer with {name}: HTTP {r.status_code}: {r.text[:300]}")
    return {"models": [name for name, _ in models], "seconds": time.perf_counter() - started}
