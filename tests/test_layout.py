"""The shape of the code a newcomer reads: modules small enough to hold one idea, routes that get what they need
through typed dependencies (app/api/deps.py) rather than from the application's state."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 400
GENERATED = ("_pb2.py", "_pb2_grpc.py", "_pb2.pyi")


def test_no_module_of_the_app_is_over_400_lines() -> None:
    too_long = {
        str(path.relative_to(ROOT)): n
        for package in ("app", "ml_worker", "web_ui")
        for path in (ROOT / package).rglob("*.py")
        if not path.name.endswith(GENERATED) and (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert too_long == {}, f"split these by concern: {too_long}"


def test_no_route_reads_the_application_state() -> None:
    readers = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "app" / "api" / "routes").rglob("*.py")
        if "app.state" in path.read_text()
    ]
    assert readers == [], f"use a dependency from app/api/deps.py instead: {readers}"
