"""Single-row synchronous infer, mlmarket's Open Inference Protocol against MLServer, with the same load generator.

Both get the same requests: ``POST /v2/models/{name}/infer`` with one ``[1, F]`` FP64 tensor, cycling through
the same rows. mlmarket's are authenticated with the bearer token of a topped-up user and billed per row.
The levels alternate between the two servers (mlmarket at 1, MLServer at 1, mlmarket at 16, ...) so that a
change in the machine's load hits both alike.
"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from bench import mlserver
from bench.client import MAX_TOP_UP, User, http_client
from bench.loadgen import closed_loop
from bench.workload import MODEL_NAME, Workload

DISTINCT_ROWS = 64
LEVELS = (1, 16, 64)


def bodies_and_expected(workload: Workload) -> tuple[list[bytes], list[float]]:
    frame = workload.frame.head(DISTINCT_ROWS)
    expected = [float(v) for v in workload.result.pipeline.predict(frame)]
    bodies = [
        json.dumps(
            {
                "id": f"bench-{i}",
                "inputs": [{"name": "input-0", "shape": [1, frame.shape[1]], "datatype": "FP64", "data": row.tolist()}],
            }
        ).encode()
        for i, row in enumerate(frame.to_numpy(dtype=float))
    ]
    return bodies, expected


def _checker(expected: list[float], who: str) -> Any:
    def check(index: int, answer: dict[str, Any]) -> None:
        got = float(np.asarray(answer["outputs"][0]["data"], dtype=float).reshape(-1)[0])
        if not math.isclose(got, expected[index], rel_tol=1e-9, abs_tol=1e-9):
            raise RuntimeError(f"{who} answered {got} for row {index}, the bare model {expected[index]}")

    return check


async def _token(base_url: str) -> dict[str, str]:
    async with http_client(base_url) as client:
        user = await User.register(client, credits=MAX_TOP_UP)
        return user.headers


def compare(
    api_base_url: str,
    workload: Workload,
    tmp: Path,
    *,
    seconds: float,
    smoke: bool,
    mlserver_reason: str | None = None,
    levels: tuple[int, ...] = LEVELS,
) -> dict[str, Any]:
    """Runs both at each level; MLServer is skipped (with the reason) when its virtualenv cannot be had."""
    bodies, expected = bodies_and_expected(workload)
    out: dict[str, Any] = {"levels": list(levels), "seconds_per_level": seconds, "mlmarket": [], "mlserver": []}
    reason = mlserver_reason
    if reason is None and smoke and not mlserver.venv_ready():
        reason = "smoke mode and no MLServer virtualenv (run bench/setup_mlserver.sh)"
    elif reason is None:
        reason = mlserver.ensure_venv()
    headers = asyncio.run(_token(api_base_url))
    mlmarket_path = f"/v2/models/{MODEL_NAME}/infer"

    def load_mlmarket(level: int) -> dict[str, Any]:
        return asyncio.run(
            closed_loop(
                api_base_url,
                mlmarket_path,
                bodies,
                concurrency=level,
                seconds=seconds,
                headers=headers,
                check=_checker(expected, "mlmarket"),
            )
        )

    if reason is not None:
        out["mlserver_skipped"] = reason
        for level in levels:
            out["mlmarket"].append(load_mlmarket(level))
        return out
    models_dir = mlserver.write_model(workload.result.pipeline, workload.frame, tmp / "mlserver-models")
    with mlserver.MLServerProcess(models_dir, tmp / "mlserver.log") as server:
        out["mlserver_settings"] = server.settings
        for level in levels:
            out["mlmarket"].append(load_mlmarket(level))
            out["mlserver"].append(
                asyncio.run(
                    closed_loop(
                        server.base_url,
                        server.infer_path,
                        bodies,
                        concurrency=level,
                        seconds=seconds,
                        check=_checker(expected, "MLServer"),
                    )
                )
            )
        server.check_alive()
        out["mlserver_rss_kib"] = server.rss_kib_tree()
    out["ratios"] = [
        {
            "concurrency": m["concurrency"],
            "requests_per_second": m["requests_per_second"] / s["requests_per_second"],
            "p99": m["latency_p99_ms"] / s["latency_p99_ms"],
        }
        for m, s in zip(out["mlmarket"], out["mlserver"], strict=True)
    ]
    return out
