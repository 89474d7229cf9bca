"""Password hashing (Argon2 through passlib), access tokens (HS256 JWT through python-jose) and API key secrets."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from jose import JWTError, jwt
from passlib.context import CryptContext

ALGORITHM = "HS256"
TOKEN_TYPE_ACCESS = "access"  # noqa: S105 - a claim value, not a secret

_pwd = CryptContext(schemes=["argon2"], deprecated="auto")


class InvalidToken(Exception):
    pass


def hash_password(password: str) -> str:
    return str(_pwd.hash(password))


def verify_password(password: str, hashed: str) -> bool:
    try:
        return bool(_pwd.verify(password, hashed))
    except (ValueError, TypeError):
        return False


# Hashing a throwaway password makes a login for an unknown email take as long as a real one.
_DUMMY_HASH = hash_password("mlmarket-timing-equaliser")


def burn_password_check(password: str) -> None:
    verify_password(password, _DUMMY_HASH)


def create_access_token(subject: str, secret: str, expires_in: timedelta) -> str:
    now = datetime.now(UTC)
    claims: dict[str, Any] = {
        "sub": subject,
        "iat": int(now.timestamp()),
        "exp": int((now + expires_in).timestamp()),
        "type": TOKEN_TYPE_ACCESS,
    }
    return str(jwt.encode(claims, secret, algorithm=ALGORITHM))


def decode_access_token(token: str, secret: str) -> str:
    """The token's subject, or InvalidToken when it is expired, forged or not an access token."""
    return decode_access_token_with_expiry(token, secret)[0]


def decode_access_token_with_expiry(token: str, secret: str) -> tuple[str, float]:
    """The token's subject and its expiry (a Unix time), or InvalidToken as :func:`decode_access_token`."""
    if len(token) > 4096:
        raise InvalidToken("token too long")
    try:
        header = jwt.get_unverified_header(token)
        if header.get("alg") != ALGORITHM:
            raise InvalidToken("unsupported token algorithm")
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], options={"require_exp": True, "require_sub": True})
    except JWTError as exc:
        raise InvalidToken(str(exc)) from exc
    if claims.get("type") != TOKEN_TYPE_ACCESS:
        raise InvalidToken("not an access token")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise InvalidToken("token has no subject")
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        raise InvalidToken("token has no expiry")
    return sub, float(exp)


# -- API keys ------------------------------------------------------------------------------------------------

API_KEY_PREFIX = "mlm_"
API_KEY_RANDOM_BYTES = 32
API_KEY_SHOWN_CHARS = 12  # "mlm_" and 8 random characters: enough to tell keys apart, useless to guess one
API_KEY_MAX_LENGTH = 128


def new_api_key() -> str:
    """A fresh secret: the recognisable prefix and 32 random bytes, URL-safe base64."""
    return API_KEY_PREFIX + secrets.token_urlsafe(API_KEY_RANDOM_BYTES)


def looks_like_api_key(token: str) -> bool:
    return token.startswith(API_KEY_PREFIX) and len(token) <= API_KEY_MAX_LENGTH


def hash_api_key(key: str) -> str:
    """sha256 of the secret (hex). A fast hash is right here: the secret has 256 random bits, not a password's
    few, so no amount of guessing finds one from its hash."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def api_key_matches(key: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_api_key(key), stored_hash)
