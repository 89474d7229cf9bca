# Shared by init.sh and scripts/test.sh.

log() { printf '\n== %s\n' "$*"; }

find_python() {
  for candidate in "${PYTHON:-}" python3.11 python3.12 python3.13 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] < (3, 14) else 1)'; then
      echo "$candidate"
      return
    fi
  done
  echo "mlmarket needs Python 3.11, 3.12 or 3.13 (set PYTHON=/path/to/python)" >&2
  exit 1
}

# pip_install ARGS...: pip install into .venv, its output kept in .venv/install.log (setuptools' notices about
# editable installs are noise to a person starting the demo); on failure the end of the log is shown.
pip_install() {
  if ! .venv/bin/python -m pip install --quiet --disable-pip-version-check "$@" >>.venv/install.log 2>&1; then
    tail -40 .venv/install.log >&2
    return 1
  fi
}

# ensure_venv EXTRAS: a .venv with mlmarket installed (editable), e.g. ensure_venv '[dev]'
ensure_venv() {
  if [ ! -x .venv/bin/python ]; then
    "$(find_python)" -m venv .venv
  fi
  pip_install --upgrade pip || true # an older pip installs the same files
  if [ "$1" = "[dev]" ] && [ -f requirements/dev.txt ]; then
    # CI and the tests install the locked versions (every file hashed), then mlmarket itself without resolving.
    pip_install --require-hashes -r requirements/dev.txt
    pip_install --no-deps -e .
  else
    pip_install -e ".$1"
  fi
  # Fails loudly if the install above did not work.
  .venv/bin/python -c 'import app, fastapi, sqlmodel, psycopg, aio_pika, dvc, sklearn'
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for_port() {
  local port=$1 name=$2
  for _ in $(seq 1 60); do
    port_open "$port" && return 0
    sleep 1
  done
  echo "$name did not come up on 127.0.0.1:$port" >&2
  return 1
}
