"""wrk (the Debian package) as the HTTP load generator of the infer comparison: written in C, one thread of it
drives thousands of requests per second for a few percent of a core, so on a small machine the client takes
little CPU from the servers it measures (the httpx generator in ``bench/loadgen.py`` is the fallback).

Each run POSTs one fixed body (an OIP JSON request) with fixed headers over ``concurrency`` keep-alive
connections for a whole number of seconds. The Lua script counts the answers that are not 2xx per thread
(keeping the first one) and its ``done()`` hook prints one JSON line: requests, errors by kind, and the latency
percentiles wrk recorded (``--latency``).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench.server import run_setup_script

SETUP_SCRIPT = Path(__file__).resolve().parent / "setup_wrk.sh"
SETUP_TIMEOUT_SECONDS = 300
MARKER = "WRK_JSON "
TIMEOUT = "30s"  # a request slower than this counts as a timeout error

# The body and headers come from files and variables named in the environment, so that no token is on a command
# line. Every thread counts its answers other than 2xx; done() adds them up over the threads.
LUA_SCRIPT = r"""
local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("*a")
  f:close()
  return data
end

wrk.method = "POST"
wrk.body = slurp(os.getenv("BENCH_WRK_BODY"))
wrk.headers["Content-Type"] = "application/json"
local auth = os.getenv("BENCH_WRK_AUTHORIZATION")
if auth ~= nil and auth ~= "" then
  wrk.headers["Authorization"] = auth
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  non2xx = 0
  first_error = ""
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    if first_error == "" then
      first_error = "HTTP " .. status .. ": " .. string.sub(body or "", 1, 200)
    end
  end
end

local function quote(s)
  s = string.gsub(s, "\\", "\\\\")
  s = string.gsub(s, '"', '\\"')
  s = string.gsub(s, "[%c]", " ")
  return '"' .. s .. '"'
end

function done(summary, latency, requests)
  local non2xx_total = 0
  local first = ""
  for _, thread in ipairs(threads) do
    non2xx_total = non2xx_total + (thread:get("non2xx") or 0)
    local e = thread:get("first_error") or ""
    if first == "" then first = e end
  end
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%d,"duration_us":%d,"bytes":%d,"non2xx":%d,"first_error":%s,' ..
    '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"status_errors":%d,"timeouts":%d,' ..
    '"p50_us":%.1f,"p90_us":%.1f,"p99_us":%.1f,"mean_us":%.1f,"max_us":%.1f}\n',
    "WRK_JSON ", summary.requests, summary.duration, summary.bytes, non2xx_total, quote(first),
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
"""


def path() -> str | None:
    return shutil.which("wrk")


def ensure() -> str | None:
    """Installs wrk with ``bench/setup_wrk.sh`` when it is missing; returns why it cannot be had, or None."""
    if path() is not None:
        return None
    done = run_setup_script(SETUP_SCRIPT, SETUP_TIMEOUT_SECONDS)
    if isinstance(done, str):
        return done
    if path() is None:
        said = (done.stdout + done.stderr).strip().splitlines()
        return said[-1] if said else f"bench/setup_wrk.sh exited {done.returncode} without installing wrk"
    return None


def version() -> str:
    exe = path()
    if exe is None:
        return "none"
    done = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10, check=False)  # noqa: S603
    text = (done.stdout + done.stderr).strip().splitlines()
    return text[0].split(" Copyright")[0] if text else "wrk"


def whole_seconds(seconds: float) -> int:
    """wrk takes whole seconds: the duration asked for, rounded up, at least 1."""
    return max(1, math.ceil(seconds - 1e-9))


def run(
    url: str,
    body: bytes,
    *,
    concurrency: int,
    seconds: float,
    authorization: str | None = None,
    threads: int = 1,
) -> dict[str, Any]:
    """One timed wrk run; the same keys as ``bench.loadgen.closed_loop``'s answer, plus wrk's own figures.

    ``errors`` counts every request that did not succeed: answers other than 2xx, timeouts, and socket errors.
    """
    exe = path()
    if exe is None:
        raise RuntimeError("wrk is not installed (bench/setup_wrk.sh)")
    duration = whole_seconds(seconds)
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        script = Path(tmp) / "oip.lua"
        script.write_text(LUA_SCRIPT)
        body_file = Path(tmp) / "body.json"
        body_file.write_bytes(body)
        env = {**os.environ, "BENCH_WRK_BODY": str(body_file), "BENCH_WRK_AUTHORIZATION": authorization or ""}
        command = [
            exe,
            f"-t{max(1, min(threads, concurrency))}",
            f"-c{concurrency}",
            f"-d{duration}s",
            f"--timeout={TIMEOUT}",
            "--latency",
            "-s",
            str(script),
            url,
        ]
        done = subprocess.run(  # noqa: S603 - wrk with our own script
            command, capture_output=True, text=True, env=env, timeout=duration + 120, check=False
        )
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith(MARKER)), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed (exit {done.returncode}): {(done.stdout + done.stderr)[-800:]}")
    raw = json.loads(line.removeprefix(MARKER))
    elapsed = raw["duration_us"] / 1e6
    socket_errors = raw["connect_errors"] + raw["read_errors"] + raw["write_errors"] + raw["timeouts"]
    errors = raw["non2xx"] + socket_errors
    ok = raw["requests"] - raw["non2xx"]
    samples = [raw["first_error"]] if raw["first_error"] else []
    if socket_errors:
        samples.append(
            f"socket errors: connect {raw['connect_errors']}, read {raw['read_errors']}, "
            f"write {raw['write_errors']}, timeout {raw['timeouts']}"
        )
    return {
        "load_generator": "wrk",
        "concurrency": concurrency,
        "seconds": elapsed,
        "requests": raw["requests"],
        "succeeded": ok,
        "errors": errors,
        "error_samples": samples,
        "requests_per_second": ok / elapsed if elapsed > 0 else float("nan"),
        "latency_p50_ms": raw["p50_us"] / 1000,
        "latency_p90_ms": raw["p90_us"] / 1000,
        "latency_p99_ms": raw["p99_us"] / 1000,
        "latency_mean_ms": raw["mean_us"] / 1000,
        "latency_max_ms": raw["max_us"] / 1000,
        "wrk": raw,
    }
