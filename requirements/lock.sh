#!/usr/bin/env bash
# Writes the lock files the images install from, one per role, with every version pinned and
# every file hashed (pip install --require-hashes): api.txt (core + `api` extra), worker.txt
# (core + `worker` extra) and ui.txt (the `ui` extra alone: the web UI imports neither app nor
# ml_worker) and dev.txt (everything, for CI and the tests). Run it after changing a dependency in pyproject.toml; tests/deploy checks that
# the lock files still satisfy pyproject.toml.
#   bash requirements/lock.sh            # uv from the dev extra (.venv/bin/uv) or PATH
set -euo pipefail
cd "$(dirname "$0")/.."
UV="${UV:-$( [ -x .venv/bin/uv ] && echo .venv/bin/uv || echo uv )}"
PYTHON="${PYTHON:-.venv/bin/python}"
# The images' Python (Dockerfile.* PYTHON_IMAGE) and platform.
TARGET=(--python-version 3.11 --python-platform x86_64-manylinux_2_28 --generate-hashes --quiet)
HEADER="requirements/lock.sh"

"$UV" pip compile pyproject.toml --extra api "${TARGET[@]}" --custom-compile-command "bash $HEADER" \
  -o requirements/api.txt
"$UV" pip compile pyproject.toml --extra worker "${TARGET[@]}" --custom-compile-command "bash $HEADER" \
  -o requirements/worker.txt
# The ui extra's own lines, without the core.
ui_in="$(mktemp --suffix=.in)"
trap 'rm -f "$ui_in"' EXIT
"$PYTHON" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["ui"]))' >"$ui_in"
"$UV" pip compile "$ui_in" "${TARGET[@]}" --custom-compile-command "bash $HEADER" --no-annotate \
  -o requirements/ui.txt
# CI and the tests: everything (core, all roles and the dev tools), installed by scripts/lib.sh's ensure_venv.
"$UV" pip compile pyproject.toml --extra dev "${TARGET[@]}" --custom-compile-command "bash $HEADER" \
  -o requirements/dev.txt
