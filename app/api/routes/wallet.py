from __future__ import annotations

from fastapi import APIRouter, Response, status

from app.api.deps import CurrentUser, ReadSessionDep, SessionDep, SettingsDep
from app.api.routes.common import IdempotencyKeyHeader, Limit, Offset, require_idempotency_key
from app.core.errors import Unprocessable
from app.models.ledger import LedgerEntryPublic, TopUpRequest, TopUpResult, WalletPublic
from app.services import ledger

router = APIRouter(prefix="/wallet", tags=["wallet"])


@router.get("", response_model=WalletPublic)
def read_wallet(user: CurrentUser, session: ReadSessionDep) -> WalletPublic:
    return WalletPublic(balance=ledger.balance_of(session, user.id or 0))


@router.post(
    "/top-ups",
    status_code=status.HTTP_201_CREATED,
    response_model=TopUpResult,
    responses={
        400: {"description": "Idempotency-Key header missing"},
        422: {"description": "Bad amount, or the key was used with another amount"},
    },
)
def create_top_up(
    body: TopUpRequest,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
    idempotency_key: IdempotencyKeyHeader = None,
) -> TopUpResult:
    key = require_idempotency_key(idempotency_key)
    if body.amount > settings.max_top_up:
        raise Unprocessable(f"amount must be between 1 and {settings.max_top_up} credits")
    credited = ledger.top_up(session, user_id=user.id or 0, amount=body.amount, idempotency_key=key)
    if credited.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return TopUpResult(balance=credited.balance, entry=LedgerEntryPublic.model_validate(credited.entry))


@router.get("/ledger", response_model=list[LedgerEntryPublic])
def read_ledger(
    user: CurrentUser, session: ReadSessionDep, limit: Limit = 50, offset: Offset = 0
) -> list[LedgerEntryPublic]:
    entries = ledger.list_entries(session, user_id=user.id or 0, limit=limit, offset=offset)
    return [LedgerEntryPublic.model_validate(e) for e in entries]
