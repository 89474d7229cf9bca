from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import CurrentUser
from app.models.user import UserPublic

router = APIRouter(prefix="/users", tags=["users"])


@router.get("/me", response_model=UserPublic)
def read_me(user: CurrentUser) -> UserPublic:
    return UserPublic.model_validate(user)
