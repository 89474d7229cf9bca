"""A small closed-loop HTTP load generator (httpx, asyncio): N clients each send the next request when the last
one is answered, for a fixed time. The same generator drives mlmarket and MLServer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx

from bench.measure import percentile


async def closed_loop(
    base_url: str,
    path: str,
    bodies: list[bytes],
    *,
    concurrency: int,
    seconds: float,
    headers: dict[str, str] | None = None,
    warm_up: int = 20,
    check: Callable[[int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """``concurrency`` clients POST ``bodies`` in turn for ``seconds``; req/s and latency percentiles.

    ``check(index, response_json)`` is called on the first answer to each body (a wrong answer raises).
    Any answer other than 200 counts as an error and is reported (the first few texts kept).
    """
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    latencies: list[float] = []
    errors: list[str] = []
    error_count = 0
    checked: set[int] = set()
    async with httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(60.0), limits=limits) as client:

        async def one(index: int) -> None:
            nonlocal error_count
            body_index = index % len(bodies)
            started = time.perf_counter()
            r = await client.post(path, content=bodies[body_index], headers=all_headers)
            latencies.append(time.perf_counter() - started)
            if r.status_code != 200:
                error_count += 1
                if len(errors) < 3:
                    errors.append(f"HTTP {r.status_code}: {r.text[:200]}")
                return
            if check is not None and body_index not in checked:
                checked.add(body_index)
                check(body_index, r.json())

        for i in range(warm_up):
            await one(i)
        if error_count:
            raise RuntimeError(f"{base_url}{path} answered errors during the warm-up: {errors}")
        latencies.clear()
        counter = 0
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal counter
            while time.perf_counter() < deadline:
                counter += 1
                await one(counter)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    done = len(latencies)
    return {
        "concurrency": concurrency,
        "seconds": elapsed,
        "requests": done,
        "errors": error_count,
        "error_samples": errors,
        "requests_per_second": (done - error_count) / elapsed,
        "latency_p50_ms": percentile(latencies, 50) * 1000,
        "latency_p99_ms": percentile(latencies, 99) * 1000,
        "latency_mean_ms": (sum(latencies) / done * 1000) if done else float("nan"),
    }
