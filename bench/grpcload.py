"""A closed-loop gRPC load generator for the Open Inference Protocol (``inference.GRPCInferenceService``).

It uses ``grpc.aio`` and the service stubs of ``tritonclient.grpc`` (``service_pb2``, ``service_pb2_grpc``),
which speak the same protocol as mlmarket and MLServer. One Python process cannot keep 64 concurrent calls
going without becoming the bottleneck on a small machine, so the load is split over several processes
(``python -m bench.grpcload``), each with its own channel and its share of the concurrent calls:

1. the parent writes the run's description to a child's stdin (one JSON line; the bearer token travels here,
   never on a command line);
2. the child connects, sends a few warm-up calls, checks its first answer against the bare model's
   predictions, and prints ``READY``;
3. once every child is ready the parent writes ``GO <seconds to wait>``; the children start together and each
   runs its calls in a closed loop for the given time, then prints its latencies and counts as one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
import time
from typing import Any

import numpy as np

WARM_UP_CALLS = 20
CALL_TIMEOUT_SECONDS = 60.0
READY_TIMEOUT_SECONDS = 60.0
RESULT_MARKER = "GRPC_JSON "
_DTYPES = {"FP64": "<f8", "FP32": "<f4", "INT64": "<i8", "INT32": "<i4"}


def percentile(values: list[float], q: float) -> float:
    # Not bench.measure's: that module imports mlmarket, seconds of start-up for every load process.
    return float(np.percentile(np.asarray(values), q)) if values else math.nan


def _output_values(response: Any) -> np.ndarray[Any, Any]:
    """The first output tensor of a ``ModelInferResponse`` as floats, raw or in typed contents."""
    output = response.outputs[0]
    if response.raw_output_contents:
        dtype = _DTYPES.get(output.datatype)
        if dtype is None:
            raise RuntimeError(f"unexpected output datatype {output.datatype}")
        return np.frombuffer(response.raw_output_contents[0], dtype=dtype).astype(float)
    contents = output.contents
    for field in ("fp64_contents", "fp32_contents", "int64_contents", "int_contents"):
        values = getattr(contents, field)
        if len(values):
            return np.asarray(values, dtype=float)
    raise RuntimeError("the answer has no output values")


def _request(spec: dict[str, Any]) -> Any:
    from tritonclient.grpc import service_pb2

    rows = np.asarray(spec["rows"], dtype="<f8")
    request = service_pb2.ModelInferRequest(model_name=spec["model"], id="bench-grpc")
    tensor = request.inputs.add()
    tensor.name = "input-0"
    tensor.datatype = "FP64"
    tensor.shape.extend(list(rows.shape))
    request.raw_input_contents.append(rows.tobytes())
    return request


def _metadata(token: str | None) -> tuple[tuple[str, str], ...] | None:
    return (("authorization", f"Bearer {token}"),) if token else None


async def _child(spec: dict[str, Any]) -> dict[str, Any]:
    import grpc
    from tritonclient.grpc import service_pb2_grpc

    request = _request(spec)
    metadata = _metadata(spec.get("token"))
    expected = np.asarray(spec["expected"], dtype=float)
    latencies: list[float] = []
    errors: list[str] = []
    error_count = 0
    loop = asyncio.get_running_loop()
    async with grpc.aio.insecure_channel(spec["target"]) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        first = await stub.ModelInfer(request, metadata=metadata, timeout=CALL_TIMEOUT_SECONDS)
        got = _output_values(first)
        if got.shape != expected.shape or not np.allclose(got, expected, rtol=spec["rtol"], atol=spec["rtol"]):
            raise RuntimeError(f"answered {got[:5].tolist()}, the bare model {expected[:5].tolist()}")
        for _ in range(WARM_UP_CALLS - 1):
            await stub.ModelInfer(request, metadata=metadata, timeout=CALL_TIMEOUT_SECONDS)
        print("READY", flush=True)
        go = await loop.run_in_executor(None, sys.stdin.readline)
        if not go.startswith("GO "):
            raise RuntimeError(f"expected GO from the parent, got {go!r}")
        await asyncio.sleep(max(0.0, float(go.split()[1])))
        deadline = time.perf_counter() + spec["seconds"]

        async def caller() -> None:
            nonlocal error_count
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    await stub.ModelInfer(request, metadata=metadata, timeout=CALL_TIMEOUT_SECONDS)
                except grpc.aio.AioRpcError as exc:
                    error_count += 1
                    if len(errors) < 3:
                        errors.append(f"{exc.code().name}: {(exc.details() or '')[:200]}")
                    continue
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(spec["concurrency"])))
        elapsed = time.perf_counter() - started
    return {
        "seconds": elapsed,
        "succeeded": len(latencies),
        "errors": error_count,
        "error_samples": errors,
        "warm_up_calls": WARM_UP_CALLS,
        "latencies_ms": [round(v * 1000, 3) for v in latencies],
    }


def child_main() -> int:
    spec = json.loads(sys.stdin.readline())
    try:
        out = asyncio.run(_child(spec))
    except Exception as exc:  # reported to the parent, which says what failed
        out = {"error": f"{type(exc).__name__}: {str(exc)[:500]}"}
    print(RESULT_MARKER + json.dumps(out), flush=True)
    return 0


def ready_reason(target: str, model: str, token: str | None, timeout: float = 5.0) -> str | None:
    """Why ``target`` does not serve ``model`` over gRPC, or None when its ModelReady says ready."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            return f"nothing answers gRPC on {target}"
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        try:
            answer = stub.ModelReady(
                service_pb2.ModelReadyRequest(name=model), metadata=_metadata(token), timeout=timeout
            )
        except grpc.RpcError as exc:
            return f"ModelReady({model}) on {target}: {exc.code().name}: {exc.details()}"
        return None if answer.ready else f"{model} is not ready on {target}"


def closed_loop(
    target: str,
    model: str,
    rows: list[list[float]],
    expected: list[float],
    *,
    seconds: float,
    token: str | None = None,
    concurrency: int = 64,
    processes: int = 2,
    rtol: float = 1e-6,
) -> dict[str, Any]:
    """``concurrency`` calls in a closed loop, split over ``processes`` processes, for ``seconds``; req/s and
    latency percentiles over all of them. The answer's shape is that of ``bench.loadgen.closed_loop``'s."""
    share = [concurrency // processes + (1 if i < concurrency % processes else 0) for i in range(processes)]
    spec = {"target": target, "model": model, "rows": rows, "expected": expected, "seconds": seconds, "rtol": rtol}
    children: list[subprocess.Popen[str]] = []
    try:
        for calls in share:
            child = subprocess.Popen(
                [sys.executable, "-m", "bench.grpcload"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            assert child.stdin is not None
            child.stdin.write(json.dumps({**spec, "token": token, "concurrency": calls}) + "\n")
            child.stdin.flush()
            children.append(child)
        for child in children:
            assert child.stdout is not None
            line = _read_line(child, READY_TIMEOUT_SECONDS)
            if line.strip() != "READY":
                raise RuntimeError(f"gRPC load process not ready: {_failure(child, line)}")
        for child in children:
            assert child.stdin is not None
            child.stdin.write("GO 0.05\n")
            child.stdin.flush()
        parts = []
        for child in children:
            line = _read_line(child, seconds + READY_TIMEOUT_SECONDS)
            if not line.startswith(RESULT_MARKER):
                raise RuntimeError(f"gRPC load process failed: {_failure(child, line)}")
            part = json.loads(line.removeprefix(RESULT_MARKER))
            if "error" in part:
                raise RuntimeError(f"gRPC load process failed: {part['error']}")
            parts.append(part)
            child.wait(timeout=30)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    latencies = [v / 1000 for part in parts for v in part["latencies_ms"]]
    elapsed = max(part["seconds"] for part in parts)
    succeeded = sum(part["succeeded"] for part in parts)
    errors = sum(part["errors"] for part in parts)
    return {
        "load_generator": f"grpc.aio, {processes} processes",
        "concurrency": concurrency,
        "processes": processes,
        "seconds": elapsed,
        "requests": succeeded + errors,
        "succeeded": succeeded,
        "errors": errors,
        "error_samples": [s for part in parts for s in part["error_samples"]][:3],
        "warm_up_requests": sum(part["warm_up_calls"] for part in parts),
        "requests_per_second": succeeded / elapsed if elapsed > 0 else float("nan"),
        "latency_p50_ms": percentile(latencies, 50) * 1000,
        "latency_p90_ms": percentile(latencies, 90) * 1000,
        "latency_p99_ms": percentile(latencies, 99) * 1000,
        "latency_mean_ms": (sum(latencies) / len(latencies) * 1000) if latencies else math.nan,
    }


def _read_line(child: subprocess.Popen[str], timeout: float) -> str:
    """The child's next stdout line, or "" when it gives none within ``timeout`` (then it is killed)."""
    import selectors

    assert child.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(child.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            child.kill()
            return ""
    return child.stdout.readline()


def _failure(child: subprocess.Popen[str], line: str) -> str:
    if line.startswith(RESULT_MARKER):
        with_error = json.loads(line.removeprefix(RESULT_MARKER))
        return str(with_error.get("error", with_error))
    if child.poll() is None:
        child.kill()
    child.wait()
    assert child.stderr is not None
    return f"{line.strip()!r}; stderr: {child.stderr.read()[-500:]}"


if __name__ == "__main__":
    raise SystemExit(child_main())
