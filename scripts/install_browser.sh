#!/usr/bin/env bash
# Debian's Chromium for the browser tests of the web UI (tests/web_ui). Idempotent:
# does nothing when /usr/bin/chromium is already there. The browser only ever comes
# from the system's package manager, never from a download of its own.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  sudo_cmd=(sudo)
else
  sudo_cmd=()
fi

echo "== installing Debian's chromium for the browser tests"
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq chromium chromium-driver >/dev/null
/usr/bin/chromium --version
