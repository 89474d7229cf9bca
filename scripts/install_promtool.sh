#!/usr/bin/env bash
# Debian's prometheus package for `promtool check metrics` (tests/core/test_metrics_exposition.py).
# Idempotent: does nothing when promtool is already on the PATH.
set -euo pipefail

command -v promtool >/dev/null && exit 0

if [ "$(id -u)" -ne 0 ]; then
  sudo_cmd=(sudo)
else
  sudo_cmd=()
fi

echo "== installing Debian's prometheus for promtool"
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get install -y -qq prometheus >/dev/null || {
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq prometheus >/dev/null
}
# The package starts a Prometheus server as a service; the tests need only the promtool binary.
"${sudo_cmd[@]}" systemctl disable --now prometheus >/dev/null 2>&1 || true
promtool --version | head -n1
