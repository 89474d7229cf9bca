"""``python -m bench``: batch throughput, paid tasks per second, memory, and synchronous infer against MLServer.

Clients wait for a prediction as a user of the API should: ``POST /api/v1/predictions`` with ``Prefer: wait=30``,
which answers with the finished task (a 202 instead means it outlasted the wait, and it is then polled).

1. A batch of ``--rows`` rows through the whole pipeline (HTTP, row checks, charge, outbox, queue, worker,
   results) on the embedded default and on PostgreSQL + RabbitMQ with one ``python -m ml_worker``, each against
   ``predict`` of the same fitted pipeline in this process.
2. Paid single-row tasks per second with ``--clients`` concurrent users (default 8, as the goal is stated), on
   the embedded default and on PostgreSQL + RabbitMQ with one ``python -m ml_worker`` (unless ``--no-services``
   or the services are unreachable), each against a bare commit/queue/consume/commit loop, and their p50
   latency. Then the same tasks submitted and polled every 10 ms, as an outside tester may do.
3. Resident memory (VmRSS) of the API server process (and of the worker) after the run.
4. Cold load of the benchmark's model from S3 (SeaweedFS), as the worker loads it on a cache miss: the served
   artifact (ONNX when the version is compiled), fetched by md5, verified and loaded, against a bare boto3
   download of the same object and its plain load.
5. The infer matrix (``bench/infer.py``): mlmarket's Open Inference Protocol, REST and gRPC, on the embedded
   default and on PostgreSQL + RabbitMQ, against MLServer as shipped and with adaptive batching, for the forest
   and a linear model. ``--only infer`` runs this part alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import signal
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.core.config import Settings
from bench import baseline, coldload, infer, measure, services
from bench.server import ApiServer, WorkerProcess, free_port
from bench.workload import Workload, make_workload, prepare_database

RESULTS_DIR = Path(__file__).resolve().parent / "results"
BATCH_GOAL = 0.8
TASKS_GOAL = 0.5
TASKS_P50_GOAL_MS = 50
COLD_LOAD_GOAL = 0.5  # bare time / mlmarket time: mlmarket within 2x of a bare download and load
DEFAULT_CLIENTS = 8
DEFAULT_ROWS = 10_000
DEFAULT_TASKS = 300
SMOKE_ROWS = 200
SMOKE_TASKS = 20
DEFAULT_INFER_SECONDS = 5.0
SMOKE_INFER_SECONDS = 0.5
COLD_LOAD_REPEATS = 3
API_RSS_GOAL_MB = 200
WORKER_RSS_GOAL_MB = 300


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--smoke", action="store_true", help=f"tiny sizes ({SMOKE_ROWS} rows, {SMOKE_TASKS} tasks)")
    parser.add_argument("--rows", type=int, default=None, help=f"rows in the batch (default {DEFAULT_ROWS})")
    parser.add_argument("--tasks", type=int, default=None, help=f"single-row tasks per mode (default {DEFAULT_TASKS})")
    parser.add_argument(
        "--clients",
        type=int,
        default=DEFAULT_CLIENTS,
        help=f"concurrent clients for the tasks (default {DEFAULT_CLIENTS})",
    )
    parser.add_argument("--repeats", type=int, default=None, help="batches timed (default 5, 1 with --smoke)")
    parser.add_argument("--no-services", action="store_true", help="skip PostgreSQL + RabbitMQ")
    parser.add_argument(
        "--infer-seconds", type=float, default=None, help="seconds per infer run (default 5; wrk rounds up to whole s)"
    )
    parser.add_argument("--no-mlserver", action="store_true", help="measure mlmarket's infer alone")
    parser.add_argument("--no-wrk", action="store_true", help="drive the REST infer runs with httpx, not wrk")
    parser.add_argument("--no-grpc", action="store_true", help="skip the gRPC infer runs")
    parser.add_argument("--no-infer", action="store_true", help="skip the infer matrix")
    parser.add_argument("--only", choices=("infer",), default=None, help="run one part alone: infer (the matrix)")
    parser.add_argument("--no-cold-load", action="store_true", help="skip the cold load from S3 (SeaweedFS)")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "latest.json", help="where to write the JSON")
    args = parser.parse_args(argv)
    args.rows = args.rows or (SMOKE_ROWS if args.smoke else DEFAULT_ROWS)
    args.tasks = args.tasks or (SMOKE_TASKS if args.smoke else DEFAULT_TASKS)
    args.repeats = args.repeats or (1 if args.smoke else 5)
    args.infer_seconds = args.infer_seconds or (SMOKE_INFER_SECONDS if args.smoke else DEFAULT_INFER_SECONDS)
    for name in ("rows", "tasks", "clients", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.infer_seconds <= 0:
        parser.error("--infer-seconds must be positive")
    if args.only == "infer" and args.no_infer:
        parser.error("--only infer and --no-infer exclude each other")
    return args


def server_env(data_dir: Path, rows: int, body_bytes: int, **extra: str) -> dict[str, str]:
    limit = str(max(10 * 1024 * 1024, 2 * body_bytes))
    env = {
        "MLMARKET_ENV": "development",
        "MLMARKET_DATA_DIR": str(data_dir),
        "MLMARKET_SECRET_KEY": secrets.token_urlsafe(48),
        "MLMARKET_PREDICT_MAX_ROWS": str(max(rows, 10_000)),
        "MLMARKET_MAX_REQUEST_BYTES": limit,
        "MLMARKET_PREDICT_MAX_BYTES": limit,
        "MLMARKET_LOG_LEVEL": "warning",
    }
    if "grpc_port" in Settings.model_fields:
        env["MLMARKET_GRPC_PORT"] = "0"  # no gRPC server unless asked for (its default port may be taken)
    env.update({f"MLMARKET_{k.upper()}": v for k, v in extra.items()})
    return env


def settings_from(env: dict[str, str]) -> Settings:
    """The settings the children read from ``env``, built without this process's own MLMARKET_* variables."""
    values: dict[str, Any] = {"database_url": None, "broker_url": None, "s3_bucket": None, "store_dir": None}
    values.update({k.removeprefix("MLMARKET_").lower(): v for k, v in env.items()})
    return Settings(**values)


def prepare(env: dict[str, str], workload: Workload) -> None:
    prepare_database(settings_from(env), workload.result, workload.extra_models)


def prepare_infer(env: dict[str, str], workload: Workload) -> None:
    """The infer matrix's catalog: the forest and the linear model only."""
    prepare_database(settings_from(env), workload.result, (), workload.linear)


def _tasks_both_ways(args: argparse.Namespace, base_url: str, workload: Workload, out: dict[str, Any]) -> None:
    """The paid single-row tasks waited for with ``Prefer: wait``, then submitted and polled."""
    out["tasks"] = asyncio.run(measure.tasks_through_api(base_url, workload, args.tasks, args.clients))
    out["tasks_polling"] = asyncio.run(
        measure.tasks_through_api(base_url, workload, args.tasks, args.clients, wait=None)
    )


def run_embedded(args: argparse.Namespace, workload: Workload, body_bytes: int, tmp: Path) -> dict[str, Any]:
    env = server_env(tmp / "embedded-data", args.rows, body_bytes)
    prepare(env, workload)
    out: dict[str, Any] = {}
    with ApiServer(env, tmp / "embedded-api.log") as api:
        out["rss_kib_at_start"] = api.rss_kib()
        out["batch"] = asyncio.run(measure.batch_through_api(api.base_url, workload, args.repeats))
        _tasks_both_ways(args, api.base_url, workload, out)
        out["five_models"] = asyncio.run(measure.one_task_per_model(api.base_url, workload))
        api.check_alive()
        out["rss_kib"] = api.rss_kib()
    out["baseline"] = asyncio.run(
        baseline.embedded_baseline(tmp / "baseline.db", args.tasks, args.clients, workload.rows)
    )
    return out


def run_services(args: argparse.Namespace, workload: Workload, body_bytes: int, tmp: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with services.postgres_database() as postgres_url, services.rabbitmq_vhost() as amqp_url:
        env = server_env(tmp / "services-data", args.rows, body_bytes, database_url=postgres_url, broker_url=amqp_url)
        prepare(env, workload)
        # its own DVC workspace on the same remote; info logs, where it says that it consumes
        worker_env = {**env, "MLMARKET_STORE_DIR": str(tmp / "worker-dvc"), "MLMARKET_LOG_LEVEL": "info"}
        with (
            ApiServer(env, tmp / "services-api.log") as api,
            WorkerProcess(worker_env, tmp / "services-worker.log") as worker,
        ):
            worker.wait_consuming()
            _tasks_both_ways(args, api.base_url, workload, out)
            out["five_models"] = asyncio.run(measure.one_task_per_model(api.base_url, workload))
            api.check_alive()
            worker.check_alive()
            # Memory with the 5 models held, before the batch (whose rows the processes may keep some of).
            out["rss_kib"] = api.rss_kib()
            out["worker_rss_kib"] = worker.rss_kib()
            out["batch"] = asyncio.run(measure.batch_through_api(api.base_url, workload, args.repeats))
            api.check_alive()
            worker.check_alive()
            out["rss_kib_after_batch"] = api.rss_kib()
            out["worker_rss_kib_after_batch"] = worker.rss_kib()
        out["baseline"] = asyncio.run(
            baseline.services_baseline(postgres_url, amqp_url, args.tasks, args.clients, workload.rows)
        )
    return out


def infer_env(data_dir: Path, body_bytes: int, **extra: str) -> dict[str, str]:
    """An API of the infer matrix: a gRPC port of its own, and top-ups large enough for one per paying user."""
    if "grpc_port" in Settings.model_fields:
        extra = {"grpc_port": str(free_port()), **extra}
    return server_env(data_dir, 100, body_bytes, max_top_up=str(infer.MAX_TOP_UP), **extra)


def run_infer(args: argparse.Namespace, workload: Workload, body_bytes: int, tmp: Path) -> dict[str, Any]:
    """The infer matrix: mlmarket on the embedded default and (when reachable) on PostgreSQL + RabbitMQ, both up
    at once so that every point can alternate between them and MLServer."""
    services_reason = "--no-services" if args.no_services else services.unavailable_reason()
    with contextlib.ExitStack() as stack:
        env = infer_env(tmp / "infer-embedded-data", body_bytes)
        prepare_infer(env, workload)
        apis = [("mlmarket-embedded", stack.enter_context(ApiServer(env, tmp / "infer-embedded-api.log")))]
        if services_reason is None:
            postgres_url = stack.enter_context(services.postgres_database())
            amqp_url = stack.enter_context(services.rabbitmq_vhost())
            env = infer_env(tmp / "infer-services-data", body_bytes, database_url=postgres_url, broker_url=amqp_url)
            prepare_infer(env, workload)
            apis.append(("mlmarket-postgresql", stack.enter_context(ApiServer(env, tmp / "infer-services-api.log"))))
        out = infer.compare(
            apis,
            workload,
            tmp,
            seconds=args.infer_seconds,
            smoke=args.smoke,
            mlserver_reason="--no-mlserver" if args.no_mlserver else None,
            wrk_reason="--no-wrk" if args.no_wrk else None,
            grpc_reason="--no-grpc" if args.no_grpc else None,
        )
        for _, api in apis:
            api.check_alive()
    if services_reason is not None:
        out["services_skipped"] = services_reason
    return out


def _num(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def _ratio(value: float) -> str:
    return f"{value:.2f}x" if value >= 0.1 else f"{value:.3f}x"


def _mb(kib: int | None) -> str:
    return "n/a" if kib is None else f"{kib * 1024 / 1e6:,.0f} MB"


def _split(part: dict[str, Any], template: str, scale: float = 1.0) -> str:
    """``submit a, queued b, worker c, answer d`` from the keys ``template.format(split)`` of ``part``, in ms."""
    out = []
    for key in measure.SPLITS:
        value = part.get(template.format(key))
        if value is not None and value == value:  # not None, not NaN
            out.append(f"{key} {value * scale:,.0f}")
    return ", ".join(out)


BACKENDS = (
    ("embedded", "embedded (SQLite, in-process queue)", "SQLite commit + asyncio queue + commit"),
    ("services", "PostgreSQL + RabbitMQ + 1 ml_worker", "PostgreSQL commit + confirmed publish + consume + commit"),
)


def _batch_rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    bare = result.get("bare_predict")
    batches: list[tuple[str, str, dict[str, Any], float | None]] = []
    for key, label, _ in BACKENDS:
        part = result.get(key) or {}
        if part.get("batch"):
            ratio = result.get("batch_ratio") if key == "embedded" else part.get("batch_ratio")
            batches.append((key, label, part["batch"], ratio))
    if bare is None or not batches:
        return []
    rows: list[tuple[str, str, str]] = []
    for _, label, batch, _ in batches:
        splits = _split(batch, "median_{}_seconds", 1000)
        rows.append(
            (
                f"batch of {batch['rows']:,} rows through mlmarket, {label} "
                f"(rows/s; Prefer: wait; medians in ms: {splits})",
                _num(batch["rows_per_second"]),
                "",
            )
        )
    rows.append((f"bare `model.predict` on the same {bare['rows']:,} rows (rows/s)", _num(bare["rows_per_second"]), ""))
    for key, _, _, ratio in batches:
        if ratio is not None:
            rows.append((f"batch ratio, {key} (mlmarket / bare)", _ratio(ratio), f"≥ {BATCH_GOAL}x"))
    rows.append(("bare `model.predict` of one row, for scale (ms)", f"{bare['single_row_ms']:.1f}", ""))
    return rows


def _tasks_rows(key: str, label: str, bare_label: str, part: dict[str, Any]) -> list[tuple[str, str, str]]:
    tasks, base = part["tasks"], part["baseline"]
    goal = key == "services"
    rows = [
        (
            f"paid single-row tasks, {label}, {tasks['clients']} clients, Prefer: wait "
            f"(tasks/s; p95 {tasks['latency_p95_ms']:.0f} ms)",
            _num(tasks["tasks_per_second"]),
            "",
        ),
        (
            f"p50 latency of those tasks, {key} (ms; p50s of the parts: {_split(tasks, '{}_p50_ms')})",
            f"{tasks['latency_p50_ms']:.0f}",
            f"≤ {TASKS_P50_GOAL_MS} ms" if goal else "reported",
        ),
    ]
    polling = part.get("tasks_polling")
    if polling:
        rows.append(
            (
                f"paid single-row tasks, {label}, {polling['clients']} clients, polling "
                f"(POST, then GET every {polling['poll_seconds'] * 1000:.0f} ms; tasks/s; "
                f"p50 {polling['latency_p50_ms']:.0f} ms, p95 {polling['latency_p95_ms']:.0f} ms; "
                f"ratio {_ratio(part['tasks_polling_ratio'])})",
                _num(polling["tasks_per_second"]),
                "reported",
            )
        )
    rows += [
        (f"bare loop: {bare_label} (tasks/s)", _num(base["tasks_per_second"]), ""),
        (
            f"tasks ratio, {key} (mlmarket with Prefer: wait / bare)",
            _ratio(part["tasks_ratio"]),
            f"≥ {TASKS_GOAL}x" if goal else "reported",
        ),
    ]
    return rows


def _cold_rows(cold: dict[str, Any]) -> list[tuple[str, str, str]]:
    what = "the ONNX file" if cold.get("artifact") == "onnx" else "the skops file"
    loader = "CompiledModel.load" if cold.get("artifact") == "onnx" else "ModelRuntime.load"
    bare_what = "the same object" if cold.get("artifact") == "onnx" else "a joblib file of the same estimator"
    return [
        (
            f"cold load from S3 (SeaweedFS) as the worker on a cache miss: {what} "
            f"({cold['artifact_bytes'] / 1e6:,.1f} MB) fetched by md5, verified, {loader} (ms; "
            f"fetch {cold['median_fetch_seconds'] * 1000:.0f}, load {cold['median_load_seconds'] * 1000:.0f})",
            f"{cold['median_seconds'] * 1000:,.0f}",
            "",
        ),
        (
            f"bare: boto3 download of {bare_what} + `{cold.get('bare_load', 'joblib.load')}` (ms; "
            f"download {cold.get('bare_median_fetch_seconds', float('nan')) * 1000:.0f}, "
            f"load {cold.get('bare_median_load_seconds', float('nan')) * 1000:.0f})",
            f"{cold['bare_median_seconds'] * 1000:,.0f}",
            "",
        ),
        (
            "cold load ratio (bare time / mlmarket time)",
            _ratio(cold["ratio"]),
            f"≥ {COLD_LOAD_GOAL}x (mlmarket ≤ {1 / COLD_LOAD_GOAL:g}x bare)",
        ),
    ]


def table(result: dict[str, Any]) -> str:
    rows = _batch_rows(result)
    emb = result.get("embedded") or {}
    svc = result.get("services") or {}
    for key, label, bare_label in BACKENDS:
        part = result.get(key) or {}
        if "tasks" in part and "baseline" in part:
            rows += _tasks_rows(key, label, bare_label, part)
    if "rss_kib" in emb:
        rows.append(("API server RSS, embedded (API + in-process worker holding 5 models)", _mb(emb["rss_kib"]), ""))
    if "rss_kib" in svc:
        after = ""
        if "rss_kib_after_batch" in svc:
            after = f"; {_mb(svc['rss_kib_after_batch'])} after the batch"
        rows.append(
            (
                f"API server RSS, services (serving the 5 models over /v2{after})",
                _mb(svc["rss_kib"]),
                f"≤ {API_RSS_GOAL_MB} MB",
            )
        )
        after = ""
        if "worker_rss_kib_after_batch" in svc:
            after = f"; {_mb(svc['worker_rss_kib_after_batch'])} after the batch"
        rows.append(
            (
                f"ml_worker RSS holding 5 models, services{after}",
                _mb(svc.get("worker_rss_kib")),
                f"≤ {WORKER_RSS_GOAL_MB} MB",
            )
        )
    cold = result.get("cold_load")
    if cold:
        rows += _cold_rows(cold)
    for key in ("cold_load_skipped", "cold_load_error", "infer_skipped", "infer_error"):
        if key in result:
            rows.append((key.replace("_", " "), "n/a", str(result[key])[:200]))
    if "services_skipped" in result:
        rows.append(("real services", "skipped", result["services_skipped"]))
    lines = []
    if rows:
        lines += ["| figure | measured | goal |", "|---|---:|---|"]
        lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    part = result.get("infer")
    if part:
        lines += ["", *infer.notes(part), "", infer.table(part)]
    return "\n".join(lines).strip("\n")


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "load_average_at_start": os.getloadavg(),
    }


def _tasks_ratios(part: dict[str, Any]) -> None:
    """The tasks ratios of one backend: tasks per second through mlmarket over those of the bare loop."""
    bare = part["baseline"]["tasks_per_second"]
    part["tasks_ratio"] = part["tasks"]["tasks_per_second"] / bare
    part["tasks_polling_ratio"] = part["tasks_polling"]["tasks_per_second"] / bare


def run_core(args: argparse.Namespace, workload: Workload, body_bytes: int, tmp: Path, result: dict[str, Any]) -> int:
    """Batch, tasks, memory and cold load; fills ``result`` and returns the exit status."""
    status = 0
    try:
        emb = result["embedded"] = run_embedded(args, workload, body_bytes, tmp)
        result["batch_ratio"] = emb["batch"]["rows_per_second"] / result["bare_predict"]["rows_per_second"]
        _tasks_ratios(emb)
    except Exception as exc:
        traceback.print_exc()
        result["embedded_error"] = f"{type(exc).__name__}: {exc}"
        status = 1
    reason = "--no-services" if args.no_services else services.unavailable_reason()
    if reason:
        result["services_skipped"] = reason
    else:
        try:
            svc = result["services"] = run_services(args, workload, body_bytes, tmp)
            svc["batch_ratio"] = svc["batch"]["rows_per_second"] / result["bare_predict"]["rows_per_second"]
            _tasks_ratios(svc)
        except Exception as exc:
            traceback.print_exc()
            result["services_error"] = f"{type(exc).__name__}: {exc}"
            status = 1
    if args.no_cold_load:
        result["cold_load_skipped"] = "--no-cold-load"
    else:
        try:
            result["cold_load"] = coldload.measure(workload, tmp, 1 if args.smoke else COLD_LOAD_REPEATS)
        except Exception as exc:
            traceback.print_exc()
            result["cold_load_error"] = f"{type(exc).__name__}: {exc}"
            status = 1
    return status


def run(args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    result: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(),
        "arguments": {k: str(v) for k, v in vars(args).items()},
        "machine": machine(),
    }
    status = 0
    started = time.perf_counter()
    workload = make_workload(args.rows)
    body_bytes = len(json.dumps({"model": "x", "rows": workload.rows}).encode())
    everything = args.only is None
    if everything:
        result["bare_predict"] = measure.bare_predict(workload, repeats=max(args.repeats, 3))
    with tempfile.TemporaryDirectory(prefix="mlmarket-bench-") as tmp_name:
        tmp = Path(tmp_name)
        if everything:
            status = run_core(args, workload, body_bytes, tmp, result)
        if args.no_infer:
            result["infer_skipped"] = "--no-infer"
        else:
            try:
                infer_started = time.perf_counter()
                result["infer"] = run_infer(args, workload, body_bytes, tmp)
                result["infer"]["total_seconds"] = time.perf_counter() - infer_started
                if result["infer"]["problems"]:
                    status = 1
            except Exception as exc:
                traceback.print_exc()
                result["infer_error"] = f"{type(exc).__name__}: {exc}"
                status = 1
    result["total_seconds"] = time.perf_counter() - started
    result["machine"]["load_average_at_end"] = os.getloadavg()
    return result, status


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds the with-blocks: servers stopped, database and vhost dropped


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    result, status = run(args)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"\n{result['machine']['cpus']} CPUs, {result['total_seconds']:.0f} s in all; details in {args.output}")
    for key in ("embedded_error", "services_error", "infer_error", "cold_load_error"):
        if key in result:
            print(f"{key.replace('_', ' ')}: {result[key]}", file=sys.stderr)
    for problem in (result.get("infer") or {}).get("problems", []):
        print(f"infer problem: {problem}", file=sys.stderr)
    return status
