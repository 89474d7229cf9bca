"""``python -m bench``: batch throughput, paid tasks per second, memory, and synchronous infer against MLServer.

1. A batch of ``--rows`` rows through the whole pipeline (HTTP, row checks, charge, outbox, queue, worker,
   results) on the embedded default, against ``predict`` of the same fitted pipeline in this process.
2. Paid single-row tasks per second (submit, then poll until succeeded) with ``--clients`` concurrent users,
   on the embedded default and on PostgreSQL + RabbitMQ with one ``python -m ml_worker`` (unless
   ``--no-services`` or the services are unreachable), each against a bare commit/queue/consume/commit loop.
3. Resident memory (VmRSS) of the API server process (and of the worker) after the run.
4. Cold load of a model from S3 (SeaweedFS).
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
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients for the tasks (default 4)")
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


def run_embedded(args: argparse.Namespace, workload: Workload, body_bytes: int, tmp: Path) -> dict[str, Any]:
    env = server_env(tmp / "embedded-data", args.rows, body_bytes)
    prepare(env, workload)
    out: dict[str, Any] = {}
    with ApiServer(env, tmp / "embedded-api.log") as api:
        out["rss_kib_at_start"] = api.rss_kib()
        out["batch"] = asyncio.run(measure.batch_through_api(api.base_url, workload, args.repeats))
        out["tasks"] = asyncio.run(measure.tasks_through_api(api.base_url, workload, args.tasks, args.clients))
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
            out["tasks"] = asyncio.run(measure.tasks_through_api(api.base_url, workload, args.tasks, args.clients))
            out["five_models"] = asyncio.run(measure.one_task_per_model(api.base_url, workload))
            api.check_alive()
            worker.check_alive()
            out["rss_kib"] = api.rss_kib()
            out["worker_rss_kib"] = worker.rss_kib()
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


def table(result: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str]] = []
    emb = result.get("embedded") or {}
    if "batch" in emb:
        batch, bare = emb["batch"], result["bare_predict"]
        rows += [
            (
                f"batch of {batch['rows']:,} rows through mlmarket, embedded (rows/s)",
                _num(batch["rows_per_second"]),
                "",
            ),
            (f"bare `model.predict` on the same {bare['rows']:,} rows (rows/s)", _num(bare["rows_per_second"]), ""),
            ("batch ratio (mlmarket / bare)", _ratio(result["batch_ratio"]), f"≥ {BATCH_GOAL}x"),
            ("bare `model.predict` of one row, for scale (ms)", f"{bare['single_row_ms']:.1f}", ""),
        ]
    for key, label, bare_label in (
        ("embedded", "embedded (SQLite, in-process queue)", "SQLite commit + asyncio queue + commit"),
        ("services", "PostgreSQL + RabbitMQ + 1 ml_worker", "PostgreSQL commit + confirmed publish + consume + commit"),
    ):
        part = result.get(key) or {}
        if "tasks" not in part:
            continue
        tasks, base = part["tasks"], part["baseline"]
        rows += [
            (
                f"paid single-row tasks, {label}, {tasks['clients']} clients "
                f"(tasks/s; p50 {tasks['latency_p50_ms']:.0f} ms)",
                _num(tasks["tasks_per_second"]),
                "",
            ),
            (f"bare loop: {bare_label} (tasks/s)", _num(base["tasks_per_second"]), ""),
            (
                f"tasks ratio, {key} (mlmarket / bare)",
                _ratio(part["tasks_ratio"]),
                f"≥ {TASKS_GOAL}x" if key == "services" else "reported",
            ),
        ]
    svc = result.get("services") or {}
    if "rss_kib" in emb:
        rows.append(("API server RSS, embedded (API + in-process worker holding 5 models)", _mb(emb["rss_kib"]), ""))
    if "rss_kib" in svc:
        rows.append(
            ("API server RSS, services (serving the 5 models over /v2)", _mb(svc["rss_kib"]), f"≤ {API_RSS_GOAL_MB} MB")
        )
        rows.append(
            ("ml_worker RSS holding 5 models, services", _mb(svc.get("worker_rss_kib")), f"≤ {WORKER_RSS_GOAL_MB} MB")
        )
    cold = result.get("cold_load")
    if cold:
        rows += [
            (
                f"cold load from S3 (SeaweedFS), empty cache: store.fetch + ModelRuntime.load (ms; "
                f"fetch {cold['median_fetch_seconds'] * 1000:.0f}, load {cold['median_load_seconds'] * 1000:.0f})",
                f"{cold['median_seconds'] * 1000:,.0f}",
                "",
            ),
            (
                "bare: boto3 download + `joblib.load` of the same estimator (ms)",
                f"{cold['bare_median_seconds'] * 1000:,.0f}",
                "",
            ),
            ("cold load ratio (bare time / mlmarket time)", _ratio(cold["ratio"]), "reported"),
        ]
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


def run_core(args: argparse.Namespace, workload: Workload, body_bytes: int, tmp: Path, result: dict[str, Any]) -> int:
    """Batch, tasks, memory and cold load; fills ``result`` and returns the exit status."""
    status = 0
    try:
        emb = result["embedded"] = run_embedded(args, workload, body_bytes, tmp)
        result["batch_ratio"] = emb["batch"]["rows_per_second"] / result["bare_predict"]["rows_per_second"]
        emb["tasks_ratio"] = emb["tasks"]["tasks_per_second"] / emb["baseline"]["tasks_per_second"]
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
            svc["tasks_ratio"] = svc["tasks"]["tasks_per_second"] / svc["baseline"]["tasks_per_second"]
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
