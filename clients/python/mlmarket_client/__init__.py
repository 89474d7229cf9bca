"""A Python client for mlmarket, the prediction marketplace: browse the catalog, pay per predicted row.

from mlmarket_client import Client

with Client("http://localhost:8000", api_key="mlm_...") as client:
    frame_with_predictions = client.predict("diabetes-linear", frame)
"""

from mlmarket_client._core import (
    Feature,
    InferResult,
    Model,
    PredictionResult,
    RowError,
    Task,
    __version__,
)
from mlmarket_client.async_client import AsyncClient
from mlmarket_client.client import Client
from mlmarket_client.errors import (
    AuthenticationError,
    BadRequest,
    Conflict,
    ConnectionFailed,
    InsufficientCredits,
    MlmarketError,
    NotFound,
    PayloadTooLarge,
    PaymentRequired,
    PermissionDenied,
    PredictionTimeout,
    PriceChanged,
    RateLimited,
    ServerError,
    ServiceUnavailable,
    TaskFailed,
    ValidationError,
)

__all__ = [
    "AsyncClient",
    "AuthenticationError",
    "BadRequest",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "Feature",
    "InferResult",
    "InsufficientCredits",
    "MlmarketError",
    "Model",
    "NotFound",
    "PayloadTooLarge",
    "PaymentRequired",
    "PermissionDenied",
    "PredictionResult",
    "PredictionTimeout",
    "PriceChanged",
    "RateLimited",
    "RowError",
    "ServerError",
    "ServiceUnavailable",
    "Task",
    "TaskFailed",
    "ValidationError",
    "__version__",
]
