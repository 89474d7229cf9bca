from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Request, status
from fastapi.security import OAuth2PasswordRequestForm

from app.api.deps import SecretKeyDep, SessionDep, SettingsDep, ThrottleDep
from app.core import security
from app.core.errors import TooManyRequests, Unauthorized
from app.models.user import Token, UserCreate, UserPublic
from app.services import users

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    response_model=UserPublic,
    responses={409: {"description": "The email is already registered"}},
)
def register(body: UserCreate, session: SessionDep) -> UserPublic:
    user = users.create_user(session, email=str(body.email), password=body.password, full_name=body.full_name)
    return UserPublic.model_validate(user)


@router.post(
    "/token",
    response_model=Token,
    responses={
        401: {"description": "Wrong email or password"},
        429: {"description": "Too many failed sign-ins for this account from this address; see Retry-After"},
    },
)
def issue_token(
    request: Request,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    session: SessionDep,
    settings: SettingsDep,
    throttle: ThrottleDep,
    secret_key: SecretKeyDep,
) -> Token:
    address = request.client.host if request.client else "unknown"
    wait = throttle.retry_after(form.username, address)
    if wait is not None:
        error = TooManyRequests(
            f"too many failed sign-ins for {form.username!r} from your address; try again in {wait} seconds"
        )
        error.headers = {"Retry-After": str(wait)}
        raise error
    user = users.authenticate(session, form.username, form.password)
    session.commit()  # the throttle writes on its own connection; on SQLite this one must not hold the lock
    if user is None:
        throttle.record_failure(form.username, address)
        raise Unauthorized("incorrect email or password")
    throttle.reset(form.username, address)
    expires = timedelta(minutes=settings.access_token_expire_minutes)
    token = security.create_access_token(str(user.id), secret_key, expires)
    return Token(access_token=token, expires_in=int(expires.total_seconds()))
