"""The chart lints cleanly and renders manifests that the Kubernetes API schemas accept.

kubernetes-validate knows the built-in kinds of each Kubernetes version it ships schemas for; it
has no schema for custom resources (PrometheusRule, ServiceMonitor, ScaledObject, TriggerAuthentication), which it
reports as warnings. Those kinds, and only those, are left to the structural tests in
test_chart_render.py; any other unknown kind fails here.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helm.conftest import CHART, CI_VALUES, ROOT

OLDEST_SUPPORTED = "1.29.0"
CUSTOM_KINDS = {"PrometheusRule", "ServiceMonitor", "ScaledObject", "TriggerAuthentication"}


def newest_known_version() -> str:
    try:
        from kubernetes_validate import utils
    except ImportError:  # the kubernetes_validate fixture skips (or, in CI, fails) these tests
        return "latest"
    return str(utils.latest_version())


KUBERNETES_VERSIONS = [OLDEST_SUPPORTED, newest_known_version()]


def test_ci_validates_the_production_keda_and_openshift_value_sets_on_the_oldest_and_newest_kubernetes(
    kubernetes_validate: list[str],
) -> None:
    from kubernetes_validate import utils

    assert {p.name for p in CI_VALUES} >= {"production-values.yaml", "keda-values.yaml", "openshift-values.yaml"}
    known = [tuple(int(part) for part in v.split(".")) for v in utils.all_versions()]
    assert KUBERNETES_VERSIONS[-1] == ".".join(map(str, max(known)))
    assert KUBERNETES_VERSIONS[0] == OLDEST_SUPPORTED and OLDEST_SUPPORTED.startswith("1.29.")


def validate(command: list[str], text: str, version: str) -> subprocess.CompletedProcess[str]:
    # kubernetes-validate reads stdin ("-") once, so each version is its own run.
    return subprocess.run(
        [*command, "--strict", "--quiet", "-k", version, "-"],
        input=text,
        capture_output=True,
        text=True,
        timeout=120,
    )


def unknown_kinds(output: str) -> set[str]:
    marker = "Couldn't find schema for kind "
    return {line.split(marker, 1)[1].split()[0] for line in output.splitlines() if marker in line}


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_helm_lint_strict_passes(helm: Callable[..., subprocess.CompletedProcess[str]], values: Path) -> None:
    result = helm("lint", "--strict", str(CHART), "-f", str(values))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_rendered_chart_is_valid_kubernetes(
    render: Callable[..., str], kubernetes_validate: list[str], values: Path, version: str
) -> None:
    result = validate(kubernetes_validate, render(values), version)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert unknown_kinds(output) <= CUSTOM_KINDS, output


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_k8s_dependency_manifests_are_valid_kubernetes(kubernetes_validate: list[str], version: str) -> None:
    for manifest in sorted((ROOT / "k8s").glob("*.yaml")):
        result = validate(kubernetes_validate, manifest.read_text(), version)
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"{manifest.name}: {output}"
        assert not unknown_kinds(output), f"{manifest.name}: {output}"


def test_validator_is_strict(render: Callable[..., str], kubernetes_validate: list[str]) -> None:
    """A misspelt field in a Deployment is refused, so the passes above mean something."""
    broken = render(CI_VALUES[0]).replace("revisionHistoryLimit:", "revisionHistoryLimt:", 1)
    result = validate(kubernetes_validate, broken, OLDEST_SUPPORTED)
    assert result.returncode != 0
    assert "revisionHistoryLimt" in result.stdout + result.stderr


def test_every_dockerfile_passes_hadolint(hadolint: list[str]) -> None:
    dockerfiles = sorted(ROOT.glob("Dockerfile*"))
    assert {p.name for p in dockerfiles} >= {"Dockerfile.app", "Dockerfile.worker", "Dockerfile.webui"}
    for dockerfile in dockerfiles:
        result = subprocess.run([*hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"{dockerfile.name}:\n{result.stdout}{result.stderr}"
        for line in dockerfile.read_text().splitlines():
            # An ignore must say why on the line itself: "# hadolint ignore=DL3008 - reason".
            if "hadolint ignore=" in line:
                reason = line.split("hadolint ignore=", 1)[1].split(None, 1)
                assert len(reason) == 2 and len(reason[1].strip(" -")) > 10, f"{dockerfile.name}: {line}"
