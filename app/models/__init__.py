"""All tables, imported here so that SQLModel.metadata knows every one of them."""

from app.models.api_key import ApiKey, ApiKeyCharge
from app.models.catalog import ModelVersion
from app.models.dataset import Dataset, DatasetVersion
from app.models.ledger import Account, ChargeHold, LedgerEntry
from app.models.task import OutboxMessage, Task
from app.models.throttle import LoginFailure
from app.models.training import TrainingJob, TrainingShard
from app.models.user import User
from app.models.webhook import WebhookDelivery, WebhookEvent, WebhookSecret, WebhookSubscription
from app.models.worker import WorkerHeartbeat

__all__ = [
    "Account",
    "ApiKey",
    "ApiKeyCharge",
    "ChargeHold",
    "Dataset",
    "DatasetVersion",
    "LedgerEntry",
    "LoginFailure",
    "ModelVersion",
    "OutboxMessage",
    "Task",
    "TrainingJob",
    "TrainingShard",
    "User",
    "WebhookDelivery",
    "WebhookEvent",
    "WebhookSecret",
    "WebhookSubscription",
    "WorkerHeartbeat",
]
