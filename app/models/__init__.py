"""All tables, imported here so that SQLModel.metadata knows every one of them."""

from app.models.catalog import ModelVersion
from app.models.ledger import Account, ChargeHold, LedgerEntry
from app.models.task import OutboxMessage, Task
from app.models.training import Dataset, DatasetVersion, TrainingJob, TrainingShard, WorkerHeartbeat
from app.models.user import User

__all__ = [
    "Account",
    "ChargeHold",
    "Dataset",
    "DatasetVersion",
    "LedgerEntry",
    "ModelVersion",
    "OutboxMessage",
    "Task",
    "TrainingJob",
    "TrainingShard",
    "User",
    "WorkerHeartbeat",
]
