from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Engine

from app.api.deps import BrokerDep, ReadinessFailuresDep, SettingsDep, StoreDep, get_engine

router = APIRouter(prefix="/api/health", tags=["health"])

CHECK_TIMEOUT_SECONDS = 5.0


@router.get("/live")
def live() -> dict[str, str]:
    return {"status": "ok"}


def _check_database(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))


async def _outcome(check: Any) -> str:
    try:
        await asyncio.wait_for(check, timeout=CHECK_TIMEOUT_SECONDS)
        return "ok"
    except Exception as exc:
        return f"unavailable: {type(exc).__name__}"


# Dependencies the API can do without for a while: requests still land in the outbox (broker) and models already
# loaded still serve (store). Readiness reports them "degraded" but stays 200 for the grace period, so a broker
# restart does not take every API pod out of service at once. The database is not one of them.
TOLERATED = ("broker", "store")


@router.get("/ready", responses={503: {"description": "A dependency is unavailable"}})
async def ready(
    engine: Annotated[Engine, Depends(get_engine)],
    broker: BrokerDep,
    store: StoreDep,
    settings: SettingsDep,
    failing_since: ReadinessFailuresDep,
) -> JSONResponse:
    checks = {
        "database": await _outcome(asyncio.to_thread(_check_database, engine)),
        "broker": await _outcome(broker.ping()),
        "store": await _outcome(asyncio.to_thread(store.check)),
    }
    grace = settings.readiness_grace_seconds
    now = time.monotonic()
    for name in TOLERATED:
        if checks[name] == "ok":
            failing_since.pop(name, None)
        else:
            failing_since.setdefault(name, now)
    within_grace = all(now - failing_since[name] < grace for name in TOLERATED if name in failing_since)
    if all(v == "ok" for v in checks.values()):
        status, code = "ok", 200
    elif checks["database"] == "ok" and within_grace:
        status, code = "degraded", 200
    else:
        status, code = "unavailable", 503
    return JSONResponse(status_code=code, content={"status": status, "checks": checks})
