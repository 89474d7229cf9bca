"""Work to do once a database transaction has committed, and never if it rolls back.

The counters of /metrics count committed work only: a ledger entry written in a
transaction that is then rolled back (a request that could not pay, a worker whose
connection was cut) must leave no count behind. Code that writes inside a session
registers its count with :func:`on_commit`; it runs after the commit of that
session's transaction, or is dropped with the transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

_PENDING = "mlmarket.on_commit"


def on_commit(session: Session, action: Callable[[], None]) -> None:
    """Runs ``action`` once the session's current transaction has committed; drops it if it does not."""
    session.info.setdefault(_PENDING, []).append(action)


@event.listens_for(Session, "after_commit")
def _run_pending(session: Session) -> None:
    for action in session.info.pop(_PENDING, ()):
        action()


@event.listens_for(Session, "after_transaction_end")
def _drop_pending(session: Session, transaction: SessionTransaction) -> None:
    # After a commit the list is already gone; what is left at the end of the outermost transaction was rolled back.
    if transaction.parent is None:
        session.info.pop(_PENDING, None)


def pending(session: Session) -> list[Any]:
    """What waits for the session's commit (for tests)."""
    return list(session.info.get(_PENDING, ()))
