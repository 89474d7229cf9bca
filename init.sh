#!/usr/bin/env bash
# The local mlmarket in one command: a virtual environment, the install, the
# database migrations, then the API on http://127.0.0.1:8000 (embedded default:
# SQLite and a generated secret under ./data). Stop it with Ctrl-C.
#
# Set MLMARKET_* variables (see README.md) to use PostgreSQL instead.
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

export MLMARKET_HOST="${MLMARKET_HOST:-127.0.0.1}"
export MLMARKET_PORT="${MLMARKET_PORT:-8000}"

log "installing mlmarket into .venv"
ensure_venv ""

log "migrating the database"
.venv/bin/mlmarket migrate

base="http://${MLMARKET_HOST}:${MLMARKET_PORT}"
cat <<MSG

mlmarket API:        ${base}
OpenAPI docs:        ${base}/docs
Health:              ${base}/api/health/ready
Metrics:             ${base}/metrics

MSG
exec .venv/bin/mlmarket serve
