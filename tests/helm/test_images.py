"""Each image installs its role's dependencies from a lock file: the same versions on every build,
every file checked against its hash, and no web UI packages in the API and worker images.

The lock files are written by requirements/lock.sh (uv pip compile); these checks read them
offline: they must still satisfy pyproject.toml, so a changed dependency without a new lock fails.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.helm.conftest import ROOT

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
EXTRAS = PROJECT["optional-dependencies"]
# image -> (lock file, does it install the core?, its extra)
IMAGES = {
    "Dockerfile.app": ("api.txt", True, "api"),
    "Dockerfile.worker": ("worker.txt", True, "worker"),
    "Dockerfile.webui": ("ui.txt", False, "ui"),
}
# Python and platform of the images (Dockerfile.* PYTHON_IMAGE), for the markers of pyproject.toml.
IMAGE_PYTHON = {
    **default_environment(),
    "python_version": "3.11",
    "python_full_version": "3.11.13",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}
UI_ONLY = {"streamlit", "pydeck", "altair", "watchdog", "tornado"}
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+)")


def locked(lock_name: str) -> dict[str, Version]:
    """name -> pinned version of a lock file; every pin carries at least one hash."""
    text = (ROOT / "requirements" / lock_name).read_text()
    pins: dict[str, Version] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        match = PIN.match(block)
        if not match:
            continue
        assert "--hash=sha256:" in block, f"{lock_name}: {match.group(1)} has no hash"
        pins[canonicalize_name(match.group(1))] = Version(match.group(3))
    assert pins, f"{lock_name} pins nothing"
    return pins


def wanted(with_core: bool, extra: str) -> list[Requirement]:
    lines = [*(PROJECT["dependencies"] if with_core else []), *EXTRAS[extra]]
    return [r for r in map(Requirement, lines) if r.marker is None or r.marker.evaluate(IMAGE_PYTHON)]


@pytest.mark.parametrize("dockerfile", sorted(IMAGES))
def test_each_image_installs_its_own_lock_file_with_hashes(dockerfile: str) -> None:
    lock_name = IMAGES[dockerfile][0]
    text = (ROOT / dockerfile).read_text()
    assert f"COPY requirements/{lock_name} " in text
    installs = [line for line in text.splitlines() if "pip install" in line]
    from_lock = [line for line in installs if "-r requirements.txt" in line]
    assert from_lock and all("--require-hashes" in line and "--no-deps" in line for line in from_lock), installs
    # Anything else pip installs is mlmarket itself, without pulling a dependency past the lock.
    for line in installs:
        if line not in from_lock:
            assert "--no-deps ." in line, f"{dockerfile}: {line.strip()}"
    assert "pip check" in text


@pytest.mark.parametrize("dockerfile", sorted(IMAGES))
def test_lock_files_still_satisfy_pyproject(dockerfile: str) -> None:
    lock_name, with_core, extra = IMAGES[dockerfile]
    pins = locked(lock_name)
    for requirement in wanted(with_core, extra):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{lock_name} lacks {requirement}: run `bash requirements/lock.sh`"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{lock_name} pins {name}=={pins[name]}, outside {requirement}: run `bash requirements/lock.sh`"
        )


def test_the_api_and_worker_images_carry_no_web_ui_packages() -> None:
    for lock_name in ("api.txt", "worker.txt"):
        assert not set(locked(lock_name)) & UI_ONLY, lock_name
    # The API serves Arrow and Parquet results (app/services/result_writers.py): pyarrow stays.
    assert "pyarrow" in locked("api.txt") and "pyarrow" in locked("worker.txt")
    # The web UI imports neither app nor ml_worker: no model runtime and no server in its image.
    assert not set(locked("ui.txt")) & {"scikit-learn", "fastapi", "dvc", "catboost", "onnxruntime"}
    assert "fastapi" not in locked("worker.txt")


def test_the_dev_install_carries_every_role_so_the_tests_and_ci_need_nothing_else() -> None:
    assert any(
        Requirement(line).name == "mlmarket" and {"api", "worker", "ui"} <= Requirement(line).extras
        for line in EXTRAS["dev"]
    )
    for extra in ("api", "worker", "ui"):
        for requirement in wanted(True, extra):
            try:
                installed = Version(metadata.version(requirement.name))
            except metadata.PackageNotFoundError:
                pytest.fail(f"{requirement.name} ({extra}) is not installed by `pip install -e '.[dev]'`")
            assert requirement.specifier.contains(installed, prereleases=True), (requirement, installed)


def test_ci_installs_the_dev_lock_file_which_still_satisfies_pyproject() -> None:
    """CI (scripts/lib.sh ensure_venv '[dev]') installs requirements/dev.txt with hashes: every dependency of the
    core, of each role and of the dev tools is pinned there within pyproject.toml's ranges."""
    assert "--require-hashes -r requirements/dev.txt" in (ROOT / "scripts" / "lib.sh").read_text()
    pins = locked("dev.txt")
    lines = [*PROJECT["dependencies"], *(line for extra in ("api", "worker", "ui", "dev") for line in EXTRAS[extra])]
    for requirement in map(Requirement, lines):
        if requirement.name == "mlmarket" or not (
            requirement.marker is None or requirement.marker.evaluate(IMAGE_PYTHON)
        ):
            continue
        name = canonicalize_name(requirement.name)
        assert name in pins, f"dev.txt lacks {requirement}: run `bash requirements/lock.sh`"
        assert requirement.specifier.contains(pins[name], prereleases=True), (name, pins[name], str(requirement))
