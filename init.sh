#!/usr/bin/env bash
# The local mlmarket demo in one command: a virtual environment, the install,
# the database migrations, the demo data (users, credits, trained models), then
# the API with its worker on http://127.0.0.1:8000. Stop it with Ctrl-C.
#
# Embedded default: SQLite, an in-process queue and worker, and a local DVC
# remote, all under ./data. Set MLMARKET_DATABASE_URL, MLMARKET_BROKER_URL and
# MLMARKET_S3_* (see README.md) to use PostgreSQL, RabbitMQ and S3 instead; the
# workers then run as separate processes (MLMARKET_WORKERS of them, default 1).
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

export MLMARKET_HOST="${MLMARKET_HOST:-127.0.0.1}"
export MLMARKET_PORT="${MLMARKET_PORT:-8000}"
# A person reads this console: plain text logs (servers in a cluster keep the JSON default).
export MLMARKET_LOG_FORMAT="${MLMARKET_LOG_FORMAT:-text}"

log "installing mlmarket into .venv"
ensure_venv "[all]"

log "migrating the database"
.venv/bin/mlmarket migrate

log "seeding the demo (users, credits, models)"
./demo_init.sh

worker_pids=()
cleanup() {
  for pid in "${worker_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [ -n "${ui_pid:-}" ]; then kill "$ui_pid" 2>/dev/null || true; fi
}
trap cleanup EXIT

if [ -n "${MLMARKET_BROKER_URL:-}" ]; then
  export MLMARKET_RUN_WORKER_IN_API="${MLMARKET_RUN_WORKER_IN_API:-false}"
  for i in $(seq 1 "${MLMARKET_WORKERS:-1}"); do
    .venv/bin/python -m ml_worker &
    worker_pids+=("$!")
    echo "worker $i started (pid $!)"
  done
fi

base="http://${MLMARKET_HOST}:${MLMARKET_PORT}"
ui_port="${MLMARKET_UI_PORT:-8501}"
mkdir -p "${MLMARKET_DATA_DIR:-data}"
MLMARKET_API_URL="${MLMARKET_API_URL:-$base}" .venv/bin/streamlit run web_ui/serve.py \
  --server.port "$ui_port" --server.address 127.0.0.1 --server.headless true \
  --browser.gatherUsageStats false >"${MLMARKET_DATA_DIR:-data}/web_ui.log" 2>&1 &
ui_pid=$!

cat <<MSG

mlmarket API:        ${base}
OpenAPI docs:        ${base}/docs
Model catalog:       ${base}/api/v1/models
Health:              ${base}/api/health/ready
Metrics:             ${base}/metrics
Open Inference:      ${base}/v2 (REST), ${MLMARKET_HOST}:${MLMARKET_GRPC_PORT:-8081} (gRPC; MLMARKET_GRPC_PORT=0 turns it off)
Web UI: http://127.0.0.1:${ui_port}

MSG
.venv/bin/mlmarket serve
