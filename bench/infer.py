"""Synchronous infer, mlmarket's Open Inference Protocol against MLServer: a matrix of models, request sizes,
concurrencies and transports, with the same load generator for every server.

- Models: the benchmark forest (``RandomForestRegressor``, 100 trees) and a ``LinearRegression``, both on the
  diabetes data; mlmarket serves them as published with ``publish_trained``, MLServer serves the same fitted
  pipelines saved with joblib.
- Servers ("targets"): mlmarket on the embedded default, mlmarket on PostgreSQL (+ RabbitMQ) when those are
  reachable, MLServer as shipped, and MLServer with adaptive batching (``max_batch_size`` 64,
  ``max_batch_time`` 5 ms). MLServer's "best setting" at a point is the one of the two with the higher req/s.
- REST points: one row at 1, 16 and 64 concurrent clients, and 100-row requests at 4. ``POST
  /v2/models/{name}/infer`` with one FP64 tensor; mlmarket's requests carry the bearer token of a topped-up
  user and are billed per row. The load generator is wrk when it is installed (``bench/setup_wrk.sh``), else the
  httpx closed loop of ``bench/loadgen.py``.
- gRPC: one row at 64 concurrent calls, ``inference.GRPCInferenceService/ModelInfer`` with raw FP64 contents,
  from 2 processes of 32 calls each (``bench/grpcload.py``).

At each point the servers take turns (mlmarket embedded, MLServer as shipped, mlmarket on PostgreSQL, MLServer
batched) so that a change in the machine's load hits all alike. Before each timed REST run one request through
httpx checks the answer against the bare model's predictions (a few more warm the server up); each gRPC load
process checks its first answer. For mlmarket the wallet is read before and after each run: every row served
must have been billed.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench import grpcload, mlserver, wrk
from bench.client import User, http_client
from bench.loadgen import closed_loop
from bench.server import ApiServer
from bench.workload import LINEAR_MODEL_NAME, MODEL_NAME, Workload

# Answers are compared with the bare scikit-learn pipeline to this relative (and absolute) tolerance.
ANSWER_TOLERANCE = 1e-6
WARM_UP_REQUESTS = 10
# Credits of each mlmarket user of the infer runs: far more than a run can spend (one top-up, see the API env).
INFER_CREDITS = 500_000_000
MAX_TOP_UP = 1_000_000_000
BILLING_SETTLE_SECONDS = 10.0
PAUSE_BETWEEN_RUNS_SECONDS = 0.3
GRPC_CONCURRENCY = 64
GRPC_PROCESSES = 2


@dataclass(frozen=True)
class Point:
    protocol: str  # "rest" or "grpc"
    rows: int
    concurrency: int

    @property
    def label(self) -> str:
        rows = "1 row" if self.rows == 1 else f"{self.rows} rows"
        return f"{rows}, c={self.concurrency}, {'REST' if self.protocol == 'rest' else 'gRPC'}"


REST_POINTS = (Point("rest", 1, 1), Point("rest", 1, 16), Point("rest", 1, 64), Point("rest", 100, 4))
GRPC_POINTS = (Point("grpc", 1, GRPC_CONCURRENCY),)
# --smoke: one single-row point and the 100-row point (every code path, a fraction of the time).
SMOKE_REST_POINTS = (Point("rest", 1, 16), Point("rest", 100, 4))


@dataclass
class Target:
    """One server under test: an mlmarket API (a backend) or MLServer with one of its two settings."""

    key: str  # mlmarket-embedded, mlmarket-postgresql, mlserver-shipped, mlserver-batched
    base_url: str
    grpc_target: str | None
    headers: dict[str, str] = field(default_factory=dict)  # mlmarket: the bearer token of the paying user
    setting: str | None = None  # MLServer's setting
    grpc_skipped: str | None = None  # why this server's gRPC is not measured

    @property
    def is_mlmarket(self) -> bool:
        return self.key.startswith("mlmarket")

    def model_name(self, name: str) -> str:
        return name if self.setting is None else mlserver.served_name(name, self.setting)


def goal_for(model: str, point: Point) -> tuple[str, float | None, float | None]:
    """The reference a figure's ratio is taken against ("shipped" or "best"), the req/s goal and the p99 goal."""
    if point.protocol == "grpc":
        return "best", 1.0, None
    if point.rows == 1 and point.concurrency == 1:
        return ("shipped", 3.0, None) if model == "forest" else ("best", 1.0, None)
    if point.rows == 1 and point.concurrency == 64:
        return "best", 1.5, 1.0
    if point.rows == 100 and point.concurrency == 4:
        return "best", 1.0, None
    return "best", None, None


def models_of(workload: Workload) -> dict[str, tuple[str, Any]]:
    """The compared models: short key -> (catalog name, fitted pipeline)."""
    out = {"forest": (MODEL_NAME, workload.result.pipeline)}
    if workload.linear is not None:
        out["linear"] = (LINEAR_MODEL_NAME, workload.linear.pipeline)
    return out


def request_body(rows: np.ndarray[Any, Any]) -> bytes:
    return json.dumps(
        {
            "id": "bench",
            "inputs": [
                {"name": "input-0", "shape": list(rows.shape), "datatype": "FP64", "data": rows.ravel().tolist()}
            ],
        }
    ).encode()


def check_answer(answer: Any, expected: np.ndarray[Any, Any]) -> dict[str, Any]:
    """How an OIP JSON answer compares with the bare model: ok, and the largest difference."""
    try:
        got = np.asarray(answer["outputs"][0]["data"], dtype=float).reshape(-1)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        return {"ok": False, "detail": f"unreadable answer ({exc!r}): {str(answer)[:200]}"}
    if got.shape != expected.shape:
        return {"ok": False, "detail": f"{got.size} values for {expected.size} rows"}
    diff = float(np.max(np.abs(got - expected))) if got.size else 0.0
    ok = bool(np.allclose(got, expected, rtol=ANSWER_TOLERANCE, atol=ANSWER_TOLERANCE))
    out: dict[str, Any] = {"ok": ok, "max_abs_diff": diff}
    if not ok:
        out["detail"] = f"answered {got[:3].tolist()}, the bare model {expected[:3].tolist()}"
    return out


async def _check_and_warm(target: Target, path: str, body: bytes, expected: np.ndarray[Any, Any]) -> dict[str, Any]:
    """One request checked against the bare model, then a few more to warm the server; how many were served."""
    headers = {"Content-Type": "application/json", **target.headers}
    async with httpx.AsyncClient(base_url=target.base_url, timeout=httpx.Timeout(60.0)) as client:
        r = await client.post(path, content=body, headers=headers)
        if r.status_code != 200:
            return {"ok": False, "detail": f"HTTP {r.status_code}: {r.text[:300]}", "served": 0}
        check = check_answer(r.json(), expected)
        served = 1
        for _ in range(WARM_UP_REQUESTS):
            r = await client.post(path, content=body, headers=headers)
            served += r.status_code == 200
    check["served"] = served
    return check


def _balance(target: Target) -> int:
    async def read() -> int:
        async with http_client(target.base_url) as client:
            return await User(client, target.headers).balance()

    return asyncio.run(read())


def _settled_balance(target: Target) -> int:
    """The wallet balance once it stops moving (bills of the last requests may land just after their answers)."""
    deadline = time.monotonic() + BILLING_SETTLE_SECONDS
    last = _balance(target)
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = _balance(target)
        if now == last:
            return now
        last = now
    return last


def _billing(before: int, after: int, served_rows: int, slack_rows: int) -> dict[str, Any]:
    """Every row served billed: the balance fell by at least the rows answered, and by no more than those plus
    the rows of requests that may have been served without being counted (abandoned at the end, or errors)."""
    billed = before - after
    return {
        "billed_rows": billed,
        "served_rows": served_rows,
        "unaccounted_rows_allowed": slack_rows,
        "ok": served_rows <= billed <= served_rows + slack_rows,
    }


def _load_rest(target: Target, path: str, body: bytes, point: Point, seconds: float, use_wrk: bool) -> dict[str, Any]:
    if use_wrk:
        return wrk.run(
            target.base_url + path,
            body,
            concurrency=point.concurrency,
            seconds=seconds,
            authorization=target.headers.get("Authorization"),
        )
    out = asyncio.run(
        closed_loop(
            target.base_url,
            path,
            [body],
            concurrency=point.concurrency,
            seconds=seconds,
            headers=target.headers,
            warm_up=0,
        )
    )
    out["load_generator"] = "httpx"
    out["succeeded"] = out["requests"] - out["errors"]
    return out


def run_rest(
    target: Target, model: str, point: Point, body: bytes, expected: np.ndarray[Any, Any], seconds: float, use_wrk: bool
) -> dict[str, Any]:
    path = f"/v2/models/{target.model_name(model)}/infer"
    try:
        check = asyncio.run(_check_and_warm(target, path, body, expected))
        if check["served"] == 0:
            return {"error": f"check request failed: {check['detail']}", "check": check}
        before = _balance(target) if target.is_mlmarket else None
        out = _load_rest(target, path, body, point, seconds, use_wrk)
        out["check"] = check
        if before is not None:
            # wrk abandons the requests in flight when its time is up; the server may still answer and bill them.
            slack = (point.concurrency if out["load_generator"] == "wrk" else 0) + out["errors"]
            after = _settled_balance(target)
            out["billing"] = _billing(before, after, out["succeeded"] * point.rows, slack * point.rows)
    except Exception as exc:  # one failed run is reported in its cell; the others go on
        return {"error": f"{type(exc).__name__}: {str(exc)[:500]}"}
    return out


def run_grpc(
    target: Target, model: str, point: Point, rows: np.ndarray[Any, Any], expected: np.ndarray[Any, Any], seconds: float
) -> dict[str, Any]:
    assert target.grpc_target is not None
    token = target.headers.get("Authorization", "").removeprefix("Bearer ") or None
    try:
        before = _balance(target) if target.is_mlmarket else None
        out = grpcload.closed_loop(
            target.grpc_target,
            target.model_name(model),
            rows.tolist(),
            expected.tolist(),
            seconds=seconds,
            token=token,
            concurrency=point.concurrency,
            processes=GRPC_PROCESSES,
            rtol=ANSWER_TOLERANCE,
        )
        out["check"] = {"ok": True, "detail": "the first answer of each process matched the bare model"}
        if before is not None:
            after = _settled_balance(target)
            served = (out["succeeded"] + out["warm_up_requests"]) * point.rows
            out["billing"] = _billing(before, after, served, out["errors"] * point.rows)
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {str(exc)[:500]}"}
    return out


async def _paying_user(base_url: str) -> dict[str, str]:
    async with http_client(base_url) as client:
        user = await User.register(client, credits=INFER_CREDITS, max_top_up=MAX_TOP_UP)
        return dict(user.headers)


def mlmarket_target(key: str, api: ApiServer) -> Target:
    headers = asyncio.run(_paying_user(api.base_url))
    return Target(key=key, base_url=api.base_url, grpc_target=api.grpc_target, headers=headers)


def _mlserver_version() -> str | None:
    try:
        done = subprocess.run(  # noqa: S603 - the python of our own MLServer venv
            [str(mlserver.VENV / "bin" / "python"), "-c", "import mlserver; print(mlserver.__version__)"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


def _order(mlmarkets: list[Target], mlservers: list[Target]) -> list[Target]:
    """Turns at a point: mlmarket embedded, MLServer as shipped, mlmarket on PostgreSQL, MLServer batched."""
    out: list[Target] = []
    for i in range(max(len(mlmarkets), len(mlservers))):
        out += mlmarkets[i : i + 1] + mlservers[i : i + 1]
    return out


def _grpc_reason(mlmarkets: list[Target], models: dict[str, tuple[str, Any]]) -> str | None:
    """Why the gRPC points cannot run (no mlmarket API serves gRPC), or None; marks each API that does not."""
    reasons = []
    for target in mlmarkets:
        if target.grpc_target is None:
            reason: str | None = "no MLMARKET_GRPC_PORT setting in this version of mlmarket"
        else:
            token = target.headers.get("Authorization", "").removeprefix("Bearer ") or None
            name = next(iter(models.values()))[0]
            try:
                reason = grpcload.ready_reason(target.grpc_target, name, token)
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
        if reason is not None:
            target.grpc_skipped = reason
            reasons.append(f"{target.key}: {reason}")
    if reasons and len(reasons) == len(mlmarkets):
        return "mlmarket serves no gRPC (" + "; ".join(reasons) + ")"
    return None


def compare(
    apis: list[tuple[str, ApiServer]],
    workload: Workload,
    tmp: Path,
    *,
    seconds: float,
    smoke: bool,
    mlserver_reason: str | None = None,
    wrk_reason: str | None = None,
    grpc_reason: str | None = None,
) -> dict[str, Any]:
    """Runs the matrix on the given mlmarket APIs (key, server) and MLServer (unless ``mlserver_reason``)."""
    started = time.perf_counter()
    models = models_of(workload)
    frame = workload.frame
    out: dict[str, Any] = {"seconds_per_run": seconds, "answer_tolerance": ANSWER_TOLERANCE, "points": []}
    if wrk_reason is None and not smoke:
        wrk_reason = wrk.ensure()
    elif wrk_reason is None and wrk.path() is None:
        wrk_reason = "smoke mode and wrk is not installed (bench/setup_wrk.sh)"
    use_wrk = wrk_reason is None
    out["load_generator"] = (
        {"rest": f"{wrk.version()}, 1 thread", "rest_seconds_per_run": wrk.whole_seconds(seconds)}
        if use_wrk
        else {"rest": "httpx (bench/loadgen.py)", "wrk_skipped": wrk_reason}
    )
    out["load_generator"]["grpc"] = f"grpc.aio, {GRPC_PROCESSES} processes of {GRPC_CONCURRENCY // GRPC_PROCESSES}"
    if mlserver_reason is None and smoke:
        mlserver_reason = "smoke mode (a run without --smoke compares with MLServer)"
    elif mlserver_reason is None:
        mlserver_reason = mlserver.ensure_venv()
    mlmarkets = [mlmarket_target(key, api) for key, api in apis]
    grpc_reason = grpc_reason or _grpc_reason(mlmarkets, models)
    if grpc_reason:
        out["grpc_skipped"] = grpc_reason
    points = list(SMOKE_REST_POINTS if smoke else REST_POINTS) + ([] if grpc_reason else list(GRPC_POINTS))
    out["setup_seconds"] = time.perf_counter() - started
    with MLServerTargets(mlserver_reason, models, frame, tmp, out) as mlserver_run:
        mlservers = mlserver_run.targets
        out["mlserver_start_seconds"] = time.perf_counter() - started - out["setup_seconds"]
        for model, (name, pipeline) in models.items():
            for point in points:
                rows = frame.head(point.rows).to_numpy(dtype=float)
                expected = np.asarray(pipeline.predict(frame.head(point.rows)), dtype=float).reshape(-1)
                body = request_body(rows)
                runs: dict[str, Any] = {}
                for target in _order(mlmarkets, mlservers):
                    run_started = time.perf_counter()
                    if point.protocol == "grpc":
                        if target.grpc_skipped is not None or target.grpc_target is None:
                            runs[target.key] = {"error": f"no gRPC: {target.grpc_skipped}"}
                            continue
                        runs[target.key] = run_grpc(target, name, point, rows, expected, seconds)
                    else:
                        runs[target.key] = run_rest(target, name, point, body, expected, seconds, use_wrk)
                    runs[target.key]["wall_seconds"] = time.perf_counter() - run_started
                    time.sleep(PAUSE_BETWEEN_RUNS_SECONDS)
                out["points"].append(
                    {"model": model, "protocol": point.protocol, "rows": point.rows, "concurrency": point.concurrency}
                    | {"label": point.label, "runs": runs}
                )
                _print_progress(model, point, runs)
        if mlserver_run.process is not None:
            mlserver_run.process.check_alive()
            out["mlserver_rss_kib"] = mlserver_run.process.rss_kib_tree()
    out["api_rss_kib_after"] = {key: api.rss_kib() for key, api in apis}
    out["matrix_seconds"] = time.perf_counter() - started
    out["figures"] = figures(out["points"], [t.key for t in mlmarkets])
    out["problems"] = problems(out["points"])
    return out


def problems(points: list[dict[str, Any]]) -> list[str]:
    """Every run that failed, answered wrongly, had errors, or was not billed as served (never speed)."""
    out = []
    for p in points:
        for key, run in p["runs"].items():
            where = f"{p['model']}, {p['label']}, {key}"
            if "error" in run:
                out.append(f"{where}: {run['error']}")
                continue
            if not run.get("check", {}).get("ok", True):
                out.append(f"{where}: wrong answer: {run['check'].get('detail')}")
            if run["errors"]:
                out.append(f"{where}: {run['errors']} failed requests: {'; '.join(run['error_samples'])}")
            billing = run.get("billing")
            if billing is not None and not billing["ok"]:
                out.append(
                    f"{where}: billed {billing['billed_rows']} rows for {billing['served_rows']} served "
                    f"(up to {billing['unaccounted_rows_allowed']} more allowed)"
                )
    return out


class MLServerTargets:
    """MLServer serving both settings of every model (its two targets), or nothing, with the reason in ``out``."""

    def __init__(
        self, reason: str | None, models: dict[str, tuple[str, Any]], frame: Any, tmp: Path, out: dict[str, Any]
    ) -> None:
        self.reason, self.models, self.frame, self.tmp, self.out = reason, models, frame, tmp, out
        self.process: mlserver.MLServerProcess | None = None
        self.targets: list[Target] = []

    def __enter__(self) -> MLServerTargets:
        if self.reason is not None:
            self.out["mlserver_skipped"] = self.reason
            return self
        pipelines = dict(self.models.values())
        models_dir = mlserver.write_models(pipelines, self.frame, self.tmp / "mlserver-models")
        names = [mlserver.served_name(n, s) for n in pipelines for s in mlserver.SETTINGS]
        self.process = mlserver.MLServerProcess(models_dir, self.tmp / "mlserver.log", names)
        self.process.start()
        self.out["mlserver_version"] = _mlserver_version()
        self.out["mlserver_settings"] = self.process.settings
        self.out["mlserver_adaptive_batching"] = mlserver.ADAPTIVE_BATCHING
        self.targets = [
            Target(key=f"mlserver-{s}", base_url=self.process.base_url, grpc_target=self.process.grpc_target, setting=s)
            for s in mlserver.SETTINGS
        ]
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.stop()


def _print_progress(model: str, point: Point, runs: dict[str, Any]) -> None:
    parts = []
    for key, run in runs.items():
        parts.append(f"{key} {'error' if 'error' in run else format(run['requests_per_second'], ',.0f')}")
    print(f"infer {model}, {point.label}: " + ", ".join(parts), flush=True)


def _usable(run: dict[str, Any] | None) -> bool:
    return run is not None and "error" not in run and run.get("succeeded", 0) > 0


def figures(points: list[dict[str, Any]], mlmarket_keys: list[str]) -> list[dict[str, Any]]:
    """One figure per point and mlmarket backend: the runs side by side, the ratio against the goal's reference."""
    out = []
    for p in points:
        point = Point(p["protocol"], p["rows"], p["concurrency"])
        reference, goal, p99_goal = goal_for(p["model"], point)
        shipped, batched = p["runs"].get("mlserver-shipped"), p["runs"].get("mlserver-batched")
        candidates = [(k, r) for k, r in (("shipped", shipped), ("batched", batched)) if _usable(r)]
        if reference == "shipped":
            ref = ("shipped", shipped) if _usable(shipped) else None
        else:
            ref = max(candidates, key=lambda kr: kr[1]["requests_per_second"]) if candidates else None
        for key in mlmarket_keys:
            mine = p["runs"].get(key)
            fig: dict[str, Any] = {
                "model": p["model"],
                "point": p["label"],
                "protocol": p["protocol"],
                "rows": p["rows"],
                "concurrency": p["concurrency"],
                "backend": key.removeprefix("mlmarket-"),
                "reference": reference,
                "goal": goal,
                "p99_goal": p99_goal,
            }
            if ref is not None and _usable(mine):
                assert mine is not None
                fig["reference_setting"] = ref[0]
                fig["ratio"] = mine["requests_per_second"] / ref[1]["requests_per_second"]
                fig["p99_ratio"] = mine["latency_p99_ms"] / ref[1]["latency_p99_ms"]
                clean = not mine["errors"] and mine["check"].get("ok") and mine.get("billing", {}).get("ok", True)
                if goal is not None:
                    fig["met"] = bool(
                        clean and fig["ratio"] >= goal and (p99_goal is None or fig["p99_ratio"] <= p99_goal)
                    )
            out.append(fig)
    return out


def cell(run: dict[str, Any] | None) -> str:
    """A run in a table cell: req/s (p50 / p99 ms), and what went wrong if anything did."""
    if run is None:
        return "-"
    if "error" in run:
        return f"error: {run['error'][:120]}"
    text = f"{run['requests_per_second']:,.0f} ({run['latency_p50_ms']:.1f} / {run['latency_p99_ms']:.1f})"
    if not run.get("check", {}).get("ok", True):
        text += " WRONG ANSWER"
    if run["errors"]:
        text += f" {run['errors']:,} ERRORS ({'; '.join(run['error_samples'])[:120]})"
    billing = run.get("billing")
    if billing is not None and not billing["ok"]:
        text += f" BILLED {billing['billed_rows']:,} ROWS FOR {billing['served_rows']:,} SERVED"
    return text


_BACKENDS = {"embedded": "embedded", "postgresql": "PostgreSQL"}


def table(part: dict[str, Any]) -> str:
    """The infer matrix as markdown: one row per figure."""
    by_point = {(p["model"], p["label"]): p for p in part.get("points", [])}
    lines = [
        "| infer figure, req/s (p50 / p99 ms) | mlmarket | MLServer as shipped | MLServer batched | ratio (p99) "
        "| goal |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for fig in part.get("figures", []):
        p = by_point[(fig["model"], fig["point"])]
        mine = p["runs"].get(f"mlmarket-{fig['backend']}")
        ratio = "n/a"
        if "ratio" in fig:
            ratio = f"{fig['ratio']:.2f}x vs {fig['reference_setting']} (p99 {fig['p99_ratio']:.2f}x)"
        goal = "reported"
        if fig["goal"] is not None:
            goal = f"≥ {fig['goal']:.1f}x vs {'shipped' if fig['reference'] == 'shipped' else 'best'}"
            if fig["p99_goal"] is not None:
                goal += f", p99 ≤ {fig['p99_goal']:.1f}x"
            if "met" in fig:
                goal += ": met" if fig["met"] else ": missed"
        shipped, batched = cell(p["runs"].get("mlserver-shipped")), cell(p["runs"].get("mlserver-batched"))
        backend = _BACKENDS.get(fig["backend"], fig["backend"])
        lines.append(
            f"| {fig['model']}, {fig['point']}, {backend} | {cell(mine)} | {shipped} | {batched} | {ratio} | {goal} |"
        )
    return "\n".join(lines)


def notes(part: dict[str, Any]) -> list[str]:
    """What the reader needs to know beside the table: load generators, what was skipped and why."""
    gen = part.get("load_generator", {})
    lines = [f"REST load: {gen.get('rest')}; gRPC load: {gen.get('grpc')}; {part.get('seconds_per_run')} s per run."]
    if "wrk_skipped" in gen:
        lines.append(f"wrk not used ({gen['wrk_skipped']}): the httpx load generator ran instead.")
    if part.get("mlserver_version"):
        batching = part.get("mlserver_adaptive_batching", {})
        lines.append(
            f"MLServer {part['mlserver_version']}; batched = max_batch_size {batching.get('max_batch_size')}, "
            f"max_batch_time {batching.get('max_batch_time')} s."
        )
    if "mlserver_skipped" in part:
        lines.append(f"MLServer skipped: {part['mlserver_skipped']}")
    if "grpc_skipped" in part:
        lines.append(f"gRPC skipped: {part['grpc_skipped']}")
    if "services_skipped" in part:
        lines.append(f"mlmarket on PostgreSQL skipped: {part['services_skipped']}")
    return lines
