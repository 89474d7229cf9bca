"""All tables, imported here so that SQLModel.metadata knows every one of them."""

from app.models.ledger import Account, ChargeHold, LedgerEntry
from app.models.user import User

__all__ = ["Account", "ChargeHold", "LedgerEntry", "User"]
