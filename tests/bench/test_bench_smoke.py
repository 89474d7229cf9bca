"""The benchmark runs end to end at tiny sizes. A smoke check, never a speed test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_smoke_runs_and_prints_the_table(tmp_path: Path) -> None:
    output = tmp_path / "smoke.json"  # leaves bench/results/latest.json of a real run alone
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--no-services", "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    lines = done.stdout.splitlines()
    assert "| figure | measured | goal |" in lines, done.stdout
    ratio = [line for line in lines if line.startswith("| batch ratio, embedded (mlmarket / bare) |")]
    assert len(ratio) == 1, done.stdout
    assert ratio[0].split("|")[2].strip().endswith("x"), ratio[0]
    assert ratio[0].split("|")[3].strip() == "≥ 0.8x", ratio[0]
    # Single-row tasks waited for with Prefer: wait (their ratio and p50), and polled as an outside tester may.
    assert any(line.startswith("| tasks ratio, embedded") for line in lines), done.stdout
    assert any(line.startswith("| p50 latency of those tasks, embedded") for line in lines), done.stdout
    polling = [line for line in lines if line.startswith("| paid single-row tasks, embedded") and "polling" in line]
    assert len(polling) == 1, done.stdout
    assert not any(line.startswith("| batch ratio, services") for line in lines), done.stdout  # --no-services
    assert any(line.startswith("| API server RSS") for line in lines), done.stdout
    # The infer matrix: mlmarket's REST path for both models always, gRPC when the API serves it; smoke mode
    # leaves MLServer out (a run without --smoke compares with it) and uses wrk only when it is installed.
    infer_rows = [line for line in lines if line.startswith(("| forest, ", "| linear, "))]
    for model in ("forest", "linear"):
        for point in ("1 row, c=16, REST, embedded", "100 rows, c=4, REST, embedded"):
            row = next((line for line in infer_rows if line.startswith(f"| {model}, {point} |")), None)
            assert row is not None, done.stdout
            assert "error" not in row.split("|")[2] and "ERRORS" not in row and "WRONG" not in row, row
    assert any(line.startswith(("REST load: wrk", "REST load: httpx")) for line in lines), done.stdout
    assert any(line.startswith(("| forest, 1 row, c=64, gRPC, embedded |", "gRPC skipped: ")) for line in lines), (
        done.stdout
    )
    assert any(line.startswith("MLServer skipped: smoke mode") for line in lines), done.stdout
    assert any(line.startswith(("| cold load ratio", "| cold load error")) for line in lines), done.stdout
    assert output.exists()
    result = json.loads(output.read_text())
    assert result["arguments"]["clients"] == "8"  # the goal is stated at 8 clients
    tasks = result["embedded"]["tasks"]
    assert tasks["waiting"].startswith("Prefer: wait=") and tasks["answered_within_wait"] == tasks["tasks"]
    assert result["embedded"]["tasks_polling"]["waiting"] == "polling"
    assert result["embedded"]["batch"]["results_match_bare"]
    cold = result.get("cold_load")
    if cold is not None:  # SeaweedFS may be missing: then the table says why
        assert cold["artifact"] in ("onnx", "skops") and cold["median_fetch_seconds"] > 0
