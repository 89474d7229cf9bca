#!/usr/bin/env bash
# Install wrk (the Debian package), the HTTP load generator the infer benchmark prefers: written in C, it costs
# the client little CPU, which matters on a small machine where client and servers share the cores.
# Skips quietly (exit 0) when wrk is there already or when apt-get cannot be used; the benchmark then falls back
# to its httpx load generator and says so in its output.
set -uo pipefail

if command -v wrk >/dev/null 2>&1; then
  echo "wrk ready: $(command -v wrk)"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "wrk not installed: apt-get is not available"
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    echo "wrk not installed: apt-get needs root and sudo is not available without a password"
    exit 0
  fi
fi
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y -q wrk >/dev/null 2>&1; then
  # The package lists may be missing (a fresh container): update them once and try again.
  if ! { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q wrk >/dev/null 2>&1; }; then
    echo "wrk not installed: apt-get install wrk failed"
    exit 0
  fi
fi
echo "wrk ready: $(command -v wrk)"
