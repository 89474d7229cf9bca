"""Registration, sign-in and the admin's user list. No FastAPI in here."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from app.core import security
from app.core.errors import Conflict, NotFound
from app.models.ledger import Account
from app.models.user import Role, User


def normalise_email(email: str) -> str:
    return email.strip().lower()


def get_user_by_email(session: Session, email: str) -> User | None:
    return session.exec(select(User).where(User.email == normalise_email(email))).first()


def get_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id} not found")
    return user


def create_user(
    session: Session,
    *,
    email: str,
    password: str,
    full_name: str | None = None,
    role: Role = Role.client,
) -> User:
    """A new user with an empty account, in one transaction. Conflict when the email is taken."""
    email = normalise_email(email)
    if get_user_by_email(session, email) is not None:
        raise Conflict(f"a user with email {email} already exists")
    user = User(email=email, full_name=full_name, hashed_password=security.hash_password(password), role=role.value)
    session.add(user)
    try:
        session.flush()
        session.add(Account(name=f"user:{user.id}", user_id=user.id, balance=0))
        session.commit()
    except IntegrityError as exc:  # a concurrent registration won the race for this email
        session.rollback()
        raise Conflict(f"a user with email {email} already exists") from exc
    return user


def authenticate(session: Session, email: str, password: str) -> User | None:
    user = get_user_by_email(session, email)
    if user is None:
        security.burn_password_check(password)
        return None
    if not security.verify_password(password, user.hashed_password):
        return None
    if not user.is_active:
        return None
    return user


def ensure_admin(session: Session, *, email: str, password: str, full_name: str | None = None) -> tuple[User, bool]:
    """Create an admin, or promote the existing user with that email and set the password. Returns (user, created)."""
    user = get_user_by_email(session, email)
    if user is None:
        return create_user(session, email=email, password=password, full_name=full_name, role=Role.admin), True
    user.role = Role.admin.value
    user.hashed_password = security.hash_password(password)
    if full_name:
        user.full_name = full_name
    session.add(user)
    session.commit()
    return user, False


def list_users_with_balances(session: Session, *, limit: int, offset: int) -> Sequence[tuple[User, int]]:
    rows = session.exec(
        select(User, Account.balance)
        .join(Account, col(Account.user_id) == col(User.id))
        .order_by(col(User.id))
        .limit(limit)
        .offset(offset)
    ).all()
    return [(user, balance) for user, balance in rows]
