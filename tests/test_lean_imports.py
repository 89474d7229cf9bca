"""The API process stays lean: building the app imports no training, plotting or DVC package.

A process that serves compiled models needs numpy and onnxruntime, not scikit-learn
(and what it pulls in: scipy, pandas, pyarrow), skops, CatBoost, matplotlib or DVC.
Those are imported by the code that trains, parses datasets, draws reports, loads
skops artifacts or pushes to the store, when it runs. The check runs in a fresh
interpreter, since this test process has imported all of them already.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HEAVY = ("sklearn", "pandas", "matplotlib", "catboost", "scipy", "skops", "pyarrow", "dvc")
MAX_RSS_MB = 200

CREATE_APP = """
import builtins, json, sys, traceback

HEAVY = set(sys.argv[1].split(","))
first_importer = {}
original_import = builtins.__import__

def recording_import(name, globals=None, locals=None, fromlist=(), level=0):
    root = name.split(".")[0]
    if root in HEAVY and root not in sys.modules and root not in first_importer:
        frames = [f for f in traceback.extract_stack()[:-1] if "/app/" in f.filename or "/ml_worker/" in f.filename]
        first_importer[root] = " <- ".join(f"{f.filename}:{f.lineno}" for f in reversed(frames))
    return original_import(name, globals, locals, fromlist, level)

builtins.__import__ = recording_import
from app.main import create_app

create_app()
builtins.__import__ = original_import
# VmHWM, not getrusage's ru_maxrss: the latter keeps the peak of the forked parent across exec.
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(json.dumps({
    "loaded": sorted(HEAVY & {m.split(".")[0] for m in sys.modules}),
    "importers": first_importer,
    "rss_mb": int(status["VmRSS"].split()[0]) / 1024,
    "max_rss_mb": int(status["VmHWM"].split()[0]) / 1024,
}))
"""


def test_create_app_imports_no_heavy_package(tmp_path: Path) -> None:
    # The embedded default: SQLite, the in-process queue and the local-folder store, nothing else configured.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLMARKET_")}
    env["MLMARKET_DATA_DIR"] = str(tmp_path / "data")
    done = subprocess.run(
        [sys.executable, "-c", CREATE_APP, ",".join(HEAVY)],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"create_app(): VmRSS {result['rss_mb']:.1f} MB, peak {result['max_rss_mb']:.1f} MB")

    assert result["loaded"] == [], "\n".join(f"{m} imported by {where}" for m, where in result["importers"].items())
    assert result["max_rss_mb"] < MAX_RSS_MB
