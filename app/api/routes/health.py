from __future__ import annotations

import asyncio
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Engine

from app.api.deps import get_engine

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


@router.get("/ready", responses={503: {"description": "A dependency is unavailable"}})
async def ready(request: Request, engine: Annotated[Engine, Depends(get_engine)]) -> JSONResponse:
    checks = {
        "database": await _outcome(asyncio.to_thread(_check_database, engine)),
        "broker": await _outcome(request.app.state.broker.ping()),
        "store": await _outcome(asyncio.to_thread(request.app.state.store.check)),
    }
    healthy = all(v == "ok" for v in checks.values())
    return JSONResponse(
        status_code=200 if healthy else 503,
        content={"status": "ok" if healthy else "unavailable", "checks": checks},
    )
