#!/usr/bin/env bash
# Seeds the mlmarket demo: demo-admin, demo-client topped up with 600 credits,
# and the default models trained from datasets that scikit-learn ships
# (diabetes: LinearRegression, RandomForestRegressor; iris: LogisticRegression,
# RandomForestClassifier), each pushed through DVC to the configured remote.
# Running it again changes nothing. Uses the same MLMARKET_* settings as the API.
set -euo pipefail
cd "$(dirname "$0")"
MLMARKET="${MLMARKET:-.venv/bin/mlmarket}"
if [ ! -x "$MLMARKET" ]; then
  echo "demo_init.sh: $MLMARKET not found; run ./init.sh first (it installs mlmarket into .venv)" >&2
  exit 1
fi
"$MLMARKET" migrate >/dev/null
exec "$MLMARKET" demo-init "$@"
