#!/usr/bin/env bash
# Every check of mlmarket, from a fresh clone: installs what it needs into .venv,
# makes sure PostgreSQL and RabbitMQ answer on 127.0.0.1, then runs ruff, mypy,
# the import contracts and pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib.sh
. scripts/lib.sh

ensure_services() {
  if ! port_open 5432 && command -v pg_ctlcluster >/dev/null 2>&1; then
    log "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
    wait_for_port 5432 PostgreSQL || true
  fi
  if ! port_open 5672 && command -v rabbitmq-server >/dev/null 2>&1; then
    log "starting RabbitMQ"
    rabbitmq-server -detached || true
    wait_for_port 5672 RabbitMQ || true
  fi
}

log "installing into .venv"
ensure_venv "[dev]"
.venv/bin/python -c "import pytest, hypothesis"
# The buyers' Python client, its own distribution: installed as a buyer would, tested in tests/clients.
.venv/bin/python -m pip install --quiet --disable-pip-version-check ./clients/python 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -c "import mlmarket_client"

ensure_services
bash scripts/install_tools.sh  # helm for tests/helm, into .tools/
bash scripts/install_browser.sh  # Debian's chromium for the browser tests of tests/web_ui
bash scripts/install_promtool.sh  # Debian's prometheus: promtool checks both /metrics outputs in tests/core

log "ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
log "mypy"
.venv/bin/mypy
log "import contracts"
.venv/bin/lint-imports
log "pip-audit"
.venv/bin/python scripts/audit.py  # known advisories in the installed packages
log "pytest"
.venv/bin/python -m pytest "$@"
