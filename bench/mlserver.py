"""MLServer (``mlserver`` + ``mlserver-sklearn``) serving the benchmark's fitted models, for the side-by-side infer run.

MLServer lives in its own virtualenv (``.tools/mlserver-venv``, made by ``bench/setup_mlserver.sh``) because its
dependencies may conflict with mlmarket's. The model is the same fitted pipeline, saved with joblib for MLServer's
sklearn runtime. mlmarket's pipeline selects its columns by name (a ``ColumnTransformer`` fitted on a DataFrame),
which only works on DataFrames; MLServer hands the runtime a NumPy array for a ``[1, F]`` FP64 tensor, so the copy
saved for MLServer names the same columns by position. Nothing else changes: the same fitted imputer and trees,
and the predictions are checked to be identical.

Each model is served twice by one MLServer process: as shipped (MLServer's defaults) and with adaptive batching
on (``max_batch_size`` 64, ``max_batch_time`` 5 ms, per-model settings in MLServer), under ``<name>-batched``.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline

from bench.server import (
    HOST,
    START_TIMEOUT_SECONDS,
    ChildProcess,
    _die_with_parent,
    free_port,
    rss_kib,
    run_setup_script,
)

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("MLSERVER_VENV", ROOT / ".tools" / "mlserver-venv"))
SETUP_SCRIPT = Path(__file__).resolve().parent / "setup_mlserver.sh"
SETUP_TIMEOUT_SECONDS = 900
ADAPTIVE_BATCHING = {"max_batch_size": 64, "max_batch_time": 0.005}
SETTINGS = ("shipped", "batched")
BATCHED_SUFFIX = "-batched"


def served_name(name: str, setting: str) -> str:
    """The name MLServer serves a model under for one of its two settings."""
    return name if setting == "shipped" else f"{name}{BATCHED_SUFFIX}"


def venv_ready() -> bool:
    return (VENV / ".bench-ready").exists() and (VENV / "bin" / "mlserver").exists()


def ensure_venv() -> str | None:
    """Makes the MLServer virtualenv if it is missing; returns why it cannot be had, or None when it is ready."""
    if venv_ready():
        return None
    done = run_setup_script(SETUP_SCRIPT, SETUP_TIMEOUT_SECONDS)
    if isinstance(done, str):
        return done
    if done.returncode != 0 or not venv_ready():
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-5:])
        return f"bench/setup_mlserver.sh failed (exit {done.returncode}): {tail}"
    return None


def positional_copy(pipeline: Pipeline) -> Pipeline:
    """The fitted pipeline, with every ColumnTransformer naming its columns by position (so NumPy input works)."""
    clone = copy.deepcopy(pipeline)
    for _, step in clone.steps:
        if isinstance(step, ColumnTransformer):
            indices = step._transformer_to_input_indices
            step.transformers_ = [
                (name, transformer, list(indices.get(name, [])) if name != "remainder" else columns)
                for name, transformer, columns in step.transformers_
            ]
    return clone


def write_models(pipelines: dict[str, Pipeline], frame: Any, folder: Path) -> Path:
    """The model folders MLServer loads, two per pipeline (as shipped and batched): ``model.joblib`` and
    ``model-settings.json`` each. Checks that every copy predicts like the original."""
    sample = frame.head(200)
    for name, pipeline in pipelines.items():
        model = positional_copy(pipeline)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "X does not have valid feature names": expected for NumPy input
            same = np.array_equal(model.predict(sample.to_numpy(dtype=float)), pipeline.predict(sample))
        if not same:
            raise RuntimeError(f"the positional copy of {name} does not predict like the original")
        for setting in SETTINGS:
            model_name = served_name(name, setting)
            model_dir = folder / model_name
            model_dir.mkdir(parents=True, exist_ok=True)
            joblib.dump(model, model_dir / "model.joblib")
            model_settings: dict[str, Any] = {
                "name": model_name,
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./model.joblib", "version": "v1"},
            }
            if setting == "batched":
                model_settings.update(ADAPTIVE_BATCHING)
            (model_dir / "model-settings.json").write_text(json.dumps(model_settings))
    return folder


class MLServerProcess(ChildProcess):
    """``mlserver start`` on free ports of 127.0.0.1 with its defaults, except debug logging off."""

    def __init__(self, models_dir: Path, log_path: Path, model_names: list[str]) -> None:
        self.port = free_port()
        self.models_dir = models_dir
        self.model_names = model_names
        self.settings = {
            "host": HOST,
            "http_port": self.port,
            "grpc_port": free_port(),
            "metrics_port": free_port(),
            "debug": False,
            "metrics_dir": str(models_dir / ".metrics"),
            "environments_dir": str(models_dir / ".envs"),
        }
        (models_dir / "settings.json").write_text(json.dumps(self.settings))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLMARKET_", "MLSERVER_", "VIRTUAL_ENV"))}
        env["PATH"] = f"{VENV / 'bin'}:{env.get('PATH', '')}"
        super().__init__("MLServer", [], env, log_path)
        self.base_url = f"http://{HOST}:{self.port}"
        self.grpc_target = f"{HOST}:{self.settings['grpc_port']}"

    def start(self) -> None:
        log = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(  # noqa: S603 - the mlserver of our own venv
                [str(VENV / "bin" / "mlserver"), "start", str(self.models_dir)],
                cwd=self.models_dir,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        last = "no answer"
        waiting = list(self.model_names)
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                while waiting:
                    r = httpx.get(f"{self.base_url}/v2/models/{waiting[0]}/ready", timeout=5)
                    if r.status_code != 200:
                        break
                    waiting.pop(0)
                if not waiting:
                    return
                last = f"{waiting[0]}: HTTP {r.status_code} {r.text[:200]}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(
            f"MLServer was not ready within {START_TIMEOUT_SECONDS:.0f}s ({last}); log:\n{self.log_tail()}"
        )

    def rss_kib_tree(self) -> int | None:
        """VmRSS of MLServer and its inference-pool children, for scale."""
        if self.process is None:
            return None
        pids = [self.process.pid, *_children(self.process.pid)]
        values = [v for v in (rss_kib(p) for p in pids) if v is not None]
        return sum(values) if values else None


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            text = (task / "children").read_text().split()
            for child in text:
                out.append(int(child))
                out.extend(_children(int(child)))
    except (OSError, ValueError):
        pass
    return out
