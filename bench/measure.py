"""The measurements through the mlmarket API, and the bare baselines they are compared with."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from datetime import datetime
from typing import Any

import numpy as np

from bench.client import BenchError, User, http_client
from bench.workload import MODEL_NAME, PRICE_PER_ROW, Workload

BATCH_POLL_SECONDS = 0.005
SINGLE_ROW_REPEATS = 50


def _seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


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
    """One batch of all the rows per repeat: POST, then poll until succeeded. The JSON body is encoded beforehand."""
    rows = workload.rows
    expected = np.asarray(workload.result.pipeline.predict(workload.frame), dtype=float)
    body = json.dumps({"model": MODEL_NAME, "rows": rows}).encode()
    runs: list[dict[str, Any]] = []
    async with http_client(base_url) as client:
        user = await User.register(client, credits=PRICE_PER_ROW * (len(rows) * repeats + 1))
        # Warm-up: the worker fetches the artifact and caches the loaded model.
        warm_started = time.perf_counter()
        await user.wait(await user.submit(rows[:1]))
        warm_up_seconds = time.perf_counter() - warm_started
        for _ in range(repeats):
            started = time.perf_counter()
            task_id = await user.submit(body)
            accepted = time.perf_counter()
            task = await user.wait(task_id, BATCH_POLL_SECONDS)
            finished = time.perf_counter()
            results = np.asarray(task["results"], dtype=float)
            if results.shape != expected.shape:
                raise BenchError(f"expected {expected.shape[0]} results, got {results.shape}")
            runs.append(
                {
                    "seconds": finished - started,
                    "submit_seconds": accepted - started,
                    "queued_seconds": _seconds_between(task.get("created_at"), task.get("started_at")),
                    "worker_seconds": _seconds_between(task.get("started_at"), task.get("finished_at")),
                    "results_match_bare": bool(np.allclose(results, expected, rtol=1e-9, atol=1e-9)),
                }
            )
    median = statistics.median(r["seconds"] for r in runs)
    return {
        "rows": len(rows),
        "body_bytes": len(body),
        "warm_up_seconds": warm_up_seconds,
        "runs": runs,
        "median_seconds": median,
        "rows_per_second": len(rows) / median,
        "results_match_bare": all(r["results_match_bare"] for r in runs),
    }


async def tasks_through_api(base_url: str, workload: Workload, tasks: int, clients: int) -> dict[str, Any]:
    """``tasks`` paid single-row predictions by ``clients`` concurrent users, each submitting then polling."""
    rows = workload.rows
    latencies: list[float] = []
    submits: list[float] = []
    queued: list[float] = []
    worker: list[float] = []
    async with http_client(base_url) as client:
        users = await asyncio.gather(
            *(User.register(client, credits=PRICE_PER_ROW * (tasks + 1)) for _ in range(clients))
        )
        await users[0].wait(await users[0].submit(rows[:1]))  # warm-up
        next_index = 0

        async def run(user: User) -> None:
            nonlocal next_index
            while next_index < tasks:
                index = next_index
                next_index += 1
                started = time.perf_counter()
                task_id = await user.submit([rows[index % len(rows)]])
                submits.append(time.perf_counter() - started)
                task = await user.wait(task_id)
                latencies.append(time.perf_counter() - started)
                queued.append(_seconds_between(task.get("created_at"), task.get("started_at")) or 0.0)
                worker.append(_seconds_between(task.get("started_at"), task.get("finished_at")) or 0.0)

        started = time.perf_counter()
        await asyncio.gather(*(run(u) for u in users))
        elapsed = time.perf_counter() - started
    summary = summarise_tasks(tasks, clients, elapsed, latencies)
    summary["submit_p50_ms"] = percentile(submits, 50) * 1000
    summary["submit_p95_ms"] = percentile(submits, 95) * 1000
    # From the task's own timestamps: created → started (charge, outbox, queue), started → finished (worker).
    summary["queued_p50_ms"] = percentile(queued, 50) * 1000
    summary["worker_p50_ms"] = percentile(worker, 50) * 1000
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
            r = await client.post("/api/v1/predictions", json={"model": name, "rows": [row]}, headers=user.headers)
            if r.status_code != 202:
                raise BenchError(f"predict with {name}: HTTP {r.status_code}: {r.text[:300]}")
            await user.wait(str(r.json()["id"]))
            inputs = [
                {"name": k, "shape": [1], "datatype": "BYTES" if isinstance(v, str) else "FP64", "data": [v]}
                for k, v in row.items()
            ]
            r = await client.post(f"/v2/models/{name}/infer", json={"inputs": inputs}, headers=user.headers)
            if r.status_code != 200:
                raise BenchError(f"infer with {name}: HTTP {r.status_code}: {r.text[:300]}")
    return {"models": [name for name, _ in models], "seconds": time.perf_counter() - started}
