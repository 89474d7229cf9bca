"""API keys for programs: create (the secret is shown once), list, revoke. Only a signed-in person manages them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path, status

from app.api.deps import CurrentUser, ReadSessionDep, SessionDep
from app.models.api_key import ApiKeyCreate, ApiKeyCreated, ApiKeyPublic
from app.services import api_keys

router = APIRouter(prefix="/api-keys", tags=["api keys"])

_REFUSED_TO_KEYS: dict[int | str, dict[str, Any]] = {
    403: {"description": "Called with an API key: keys cannot manage keys"}
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ApiKeyCreated,
    responses={**_REFUSED_TO_KEYS, 422: {"description": "A bad name, scope, limit or expiry"}},
)
def create_api_key(body: ApiKeyCreate, user: CurrentUser, session: SessionDep) -> ApiKeyCreated:
    """Creates a key. Its secret (`key`) is in this answer only: mlmarket keeps just a hash of it."""
    return api_keys.create(session, user_id=user.id or 0, body=body)


@router.get("", response_model=list[ApiKeyPublic], responses=_REFUSED_TO_KEYS)
def list_api_keys(user: CurrentUser, session: ReadSessionDep) -> list[ApiKeyPublic]:
    """The keys that are not revoked, newest first, with what each spent this month (never their secrets)."""
    return [api_keys.to_public(k) for k in api_keys.list_for_user(session, user_id=user.id or 0)]


@router.delete(
    "/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**_REFUSED_TO_KEYS, 404: {"description": "No such key among yours"}},
)
def revoke_api_key(user: CurrentUser, session: SessionDep, key_id: int = Path(ge=1, le=2**31 - 1)) -> None:
    """Revokes a key at once: every later call with it is refused, in every API process."""
    api_keys.revoke(session, user_id=user.id or 0, key_id=key_id)
