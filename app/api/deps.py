"""Dependencies shared by the routes, as Annotated aliases so route signatures read like prose."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.engine import Engine
from sqlmodel import Session

from app.core import security
from app.core.config import Settings
from app.core.db import read_session
from app.core.errors import Forbidden, Unauthorized
from app.models.api_key import Scope
from app.models.user import Role, User
from app.services import api_keys
from app.services.dataplane import DataPlane, Principal
from app.services.datasets import ArtifactStore
from app.services.outbox import Broker, OutboxRelay
from app.services.throttle import LoginThrottle

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)


async def get_settings(request: Request) -> Settings:  # async: no thread hop for reading app state
    settings: Settings = request.app.state.settings
    return settings


def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def get_session(engine: Annotated[Engine, Depends(get_engine)]) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as session:
        yield session


def get_read_session(engine: Annotated[Engine, Depends(get_engine)]) -> Iterator[Session]:
    with read_session(engine) as session:
        yield session


async def get_dataplane(request: Request) -> DataPlane:  # async: no thread hop on the serving path
    dataplane: DataPlane = request.app.state.dataplane
    return dataplane


# What the application built at start-up (app.main), read by the routes through these rather than app.state.
async def get_store(request: Request) -> ArtifactStore:
    store: ArtifactStore = request.app.state.store
    return store


async def get_broker(request: Request) -> Broker:
    broker: Broker = request.app.state.broker
    return broker


async def get_relay(request: Request) -> OutboxRelay:
    relay: OutboxRelay = request.app.state.relay
    return relay


async def get_login_throttle(request: Request) -> LoginThrottle:
    throttle: LoginThrottle = request.app.state.login_throttle
    return throttle


async def get_secret_key(request: Request) -> str:
    secret_key: str = request.app.state.secret_key
    return secret_key


async def get_readiness_failures(request: Request) -> dict[str, float]:
    """Since when each tolerated dependency has been failing its readiness check, in this process."""
    failing_since: dict[str, float] | None = getattr(request.app.state, "readiness_failing_since", None)
    if failing_since is None:
        failing_since = request.app.state.readiness_failing_since = {}
    return failing_since


SettingsDep = Annotated[Settings, Depends(get_settings)]
DataPlaneDep = Annotated[DataPlane, Depends(get_dataplane)]
StoreDep = Annotated[ArtifactStore, Depends(get_store)]
BrokerDep = Annotated[Broker, Depends(get_broker)]
RelayDep = Annotated[OutboxRelay, Depends(get_relay)]
ThrottleDep = Annotated[LoginThrottle, Depends(get_login_throttle)]
SecretKeyDep = Annotated[str, Depends(get_secret_key)]
ReadinessFailuresDep = Annotated[dict[str, float], Depends(get_readiness_failures)]
SessionDep = Annotated[Session, Depends(get_session)]
# For endpoints that only read: on SQLite they then never wait for the write lock.
ReadSessionDep = Annotated[Session, Depends(get_read_session)]
TokenDep = Annotated[str | None, Depends(oauth2_scheme)]


# What an API key needs, by path (login tokens may do everything): (path prefix, scope to read with GET or HEAD,
# scope for the other methods, what those are). None refuses keys: they cannot manage keys or wallets nor
# administer. A path not listed may be read with 'read' and not changed with a key.
_KEY_RULES: tuple[tuple[str, str | None, str | None, str], ...] = (
    ("/api/v1/api-keys", None, None, "manage API keys"),
    ("/api/v1/admin", None, None, "use the administration endpoints"),
    ("/api/v1/workers", None, None, "use the administration endpoints"),
    ("/api/v1/webhooks", None, None, "read or rotate the webhook signing secret"),
    ("/api/v1/wallet", Scope.read, None, "top up the wallet"),
    ("/api/v1/predictions", Scope.read, Scope.predict, "run predictions"),
    ("/api/v1/datasets", Scope.read, Scope.train, "upload or change datasets"),
    ("/api/v1/training-jobs", Scope.read, Scope.train, "train models"),
    ("/api/v1/models", Scope.read, Scope.publish, "publish or unpublish models"),
)


def check_key_scope(request: Request, scopes: frozenset[str] | None) -> None:
    """Forbidden (naming the scope) when an API key may not call this endpoint; login tokens (None) may."""
    if scopes is None:
        return
    path, reading = request.url.path, request.method in ("GET", "HEAD")
    for prefix, read, write, what in _KEY_RULES:
        if path == prefix or path.startswith(prefix + "/"):
            if reading:
                api_keys.require_scope(scopes, read, "read this" if read else what)
            else:
                api_keys.require_scope(scopes, write, what)
            return
    api_keys.require_scope(scopes, Scope.read if reading else None, "read this" if reading else "do this")


def get_current_user(request: Request, engine: Annotated[Engine, Depends(get_engine)], token: TokenDep) -> User:
    """The signed-in user (or the owner of an API key), loaded in a short transaction of its own.

    Holding no session past this point matters for long responses (Server-Sent
    Events): on SQLite an open transaction would block the worker's writes.
    A key is read from the database on every call here, so a revoked one is refused at once.
    """
    if not token:
        raise Unauthorized("not authenticated: send 'Authorization: Bearer <token>' from /api/v1/auth/token")
    if security.looks_like_api_key(token):
        with read_session(engine) as session:
            key = api_keys.identify(session, token)
            user = session.get(User, key.user_id)
        check_key_scope(request, key.scopes)
        api_keys.TOUCHER.touch(engine, key.id)
        if user is None:
            raise Unauthorized(api_keys.INVALID_KEY)
        return user
    try:
        subject = security.decode_access_token(token, request.app.state.secret_key)
    except security.InvalidToken as exc:
        raise Unauthorized("invalid or expired token; sign in again") from exc
    with read_session(engine) as session:
        user = session.get(User, int(subject)) if subject.isdigit() and len(subject) < 12 else None
    if user is None or not user.is_active:
        raise Unauthorized("invalid or expired token; sign in again")
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


async def get_principal(request: Request, dataplane: DataPlaneDep, token: TokenDep) -> Principal:
    """Who is calling, from the data plane's token cache: no database read for a token seen in the last
    ``auth_cache_seconds`` (the paid paths: inference and queued predictions). An API key is checked again
    (revoked? its spend limit?) in the transaction that charges it."""
    principal = await dataplane.authenticate(token)
    check_key_scope(request, principal.scopes)
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


def get_admin_user(user: CurrentUser) -> User:
    if user.role != Role.admin.value:
        raise Forbidden("this endpoint is for administrators only")
    return user


AdminUser = Annotated[User, Depends(get_admin_user)]
