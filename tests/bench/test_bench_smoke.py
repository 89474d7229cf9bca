"""The benchmark runs end to end at tiny sizes. A smoke check, never a speed test."""

from __future__ import annotations

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
    ratio = [line for line in lines if line.startswith("| batch ratio (mlmarket / bare) |")]
    assert len(ratio) == 1, done.stdout
    assert ratio[0].split("|")[2].strip().endswith("x"), ratio[0]
    assert any(line.startswith("| tasks ratio, embedded") for line in lines), done.stdout
    assert any(line.startswith("| API server RSS") for line in lines), done.stdout
    for level in (1, 16, 64):
        assert any(line.startswith(f"| single-row infer via mlmarket OIP, concurrency {level} ") for line in lines)
    # MLServer runs when its virtualenv exists (bench/setup_mlserver.sh); smoke mode never installs it.
    assert any(line.startswith(("| infer ratio at concurrency 1 ", "| MLServer | skipped |")) for line in lines)
    assert any(line.startswith(("| cold load ratio", "| cold load error")) for line in lines), done.stdout
    assert output.exists()
