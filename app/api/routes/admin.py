from __future__ import annotations

import asyncio
import uuid

from fastapi import APIRouter, Path, Response, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from app.api.deps import AdminUser, BrokerDep, RelayDep, SessionDep, SettingsDep
from app.api.routes.common import IdempotencyKeyHeader, Limit, Offset, require_idempotency_key
from app.core.errors import Unprocessable
from app.models.ledger import AdminCreditRequest, LedgerEntryPublic, LedgerReport, TopUpResult
from app.models.user import UserAdminPublic
from app.services import ledger, outbox, users

router = APIRouter(prefix="/admin", tags=["admin"])

UserId = Path(ge=1, le=2**31 - 1)


@router.get("/users", response_model=list[UserAdminPublic])
def list_users(_: AdminUser, session: SessionDep, limit: Limit = 100, offset: Offset = 0) -> list[UserAdminPublic]:
    rows = users.list_users_with_balances(session, limit=limit, offset=offset)
    return [UserAdminPublic.model_validate(user, update={"balance": balance}) for user, balance in rows]


@router.post(
    "/users/{user_id}/credits",
    status_code=status.HTTP_201_CREATED,
    response_model=TopUpResult,
    responses={400: {"description": "An Idempotency-Key header that is blank or too long"}},
)
def credit_user(
    body: AdminCreditRequest,
    _: AdminUser,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
    user_id: int = UserId,
    idempotency_key: IdempotencyKeyHeader = None,
) -> TopUpResult:
    key = require_idempotency_key(idempotency_key) if idempotency_key is not None else str(uuid.uuid4())
    if body.amount > settings.max_top_up:
        raise Unprocessable(f"amount must be between 1 and {settings.max_top_up} credits")
    users.get_user(session, user_id)
    credited = ledger.admin_credit(session, user_id=user_id, amount=body.amount, idempotency_key=key, memo=body.memo)
    if credited.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return TopUpResult(balance=credited.balance, entry=LedgerEntryPublic.model_validate(credited.entry))


class QueueDepth(BaseModel):
    queue: str
    ready: int | None = Field(description="Messages waiting for a worker (None: the broker cannot be reached)")
    retrying: int | None = Field(description="Messages waiting out their retry backoff")
    dead: int | None = Field(description="Messages that failed every attempt (tasks failed and refunded)")


class QueuesPublic(BaseModel):
    broker: str
    outbox_unsent: int
    queues: list[QueueDepth]


@router.get("/queues", response_model=QueuesPublic)
async def queue_depths(_: AdminUser, broker: BrokerDep, relay: RelayDep, settings: SettingsDep) -> QueuesPublic:
    """How much work waits: per task queue, and committed tasks the outbox relay has not published yet."""
    depths = []
    for names in outbox.task_queues():
        queue = names[0]
        counts: list[int | None] = []
        for name in names:
            try:
                counts.append(await asyncio.wait_for(broker.queue_depth(name), timeout=5))
            except Exception:  # the broker is down: say so rather than fail the page
                counts.append(None)
        depths.append(QueueDepth(queue=queue, ready=counts[0], retrying=counts[1], dead=counts[2]))
    unsent = await run_in_threadpool(relay.unsent_count)
    kind = "embedded" if settings.embedded_queue else "rabbitmq"
    return QueuesPublic(broker=kind, outbox_unsent=unsent, queues=depths)


@router.get("/ledger/verify", response_model=LedgerReport)
def verify_ledger(_: AdminUser, session: SessionDep) -> LedgerReport:
    return ledger.verify(session)
