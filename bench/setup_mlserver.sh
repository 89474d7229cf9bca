#!/usr/bin/env bash
# Create the MLServer virtualenv the benchmark compares mlmarket with.
#
# MLServer gets its own virtualenv (.tools/mlserver-venv, git-ignored) because
# its dependencies may conflict with mlmarket's. scikit-learn is pinned to the
# version in mlmarket's .venv so that the joblib file the benchmark writes
# loads in both. Idempotent: an existing working venv is kept.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MLSERVER_VENV:-$ROOT/.tools/mlserver-venv}"
MAIN_PY="$ROOT/.venv/bin/python"
PY="${MLSERVER_PYTHON:-python3}"

if [ -f "$VENV/.bench-ready" ] && "$VENV/bin/python" -c "import mlserver_sklearn" 2>/dev/null; then
  touch "$VENV/.bench-ready"
echo "mlserver venv ready: $VENV"
  exit 0
fi

SKLEARN_PIN=""
if [ -x "$MAIN_PY" ]; then
  SKLEARN_PIN="scikit-learn==$("$MAIN_PY" -c 'import sklearn; print(sklearn.__version__)')"
fi

mkdir -p "$(dirname "$VENV")"
"$PY" -m venv --clear "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
# uvloop 0.22 and later raise in asyncio.get_event_loop() without a running loop, which kills MLServer 1.7's
# inference-pool workers at start ("There is no current event loop"); 0.21 is the last that works with it.
# shellcheck disable=SC2086
"$VENV/bin/python" -m pip install --quiet mlserver mlserver-sklearn "uvloop<0.22" $SKLEARN_PIN
"$VENV/bin/python" -c "import mlserver, mlserver_sklearn, sklearn; print('mlserver', mlserver.__version__, 'sklearn', sklearn.__version__)"
touch "$VENV/.bench-ready"
echo "mlserver venv ready: $VENV"
