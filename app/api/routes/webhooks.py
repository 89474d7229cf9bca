"""Webhooks: the signing secret, the delivery attempts of a task, and the webhook fields of task requests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError

from app.api.deps import CurrentUser, ReadSessionDep, SessionDep, SettingsDep
from app.api.errors import describe_validation_errors
from app.core.config import Settings
from app.core.errors import Unprocessable
from app.models.webhook import WebhookDeliveryPublic, WebhookRequest, WebhookSecretPublic
from app.services import predictions, training, webhooks

router = APIRouter(tags=["webhooks"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such task"}}

# The webhook fields of a prediction or training request, for the OpenAPI description.
WEBHOOK_PROPERTIES: dict[str, Any] = {
    "webhook": {
        "type": "string",
        "format": "uri",
        "maxLength": 2048,
        "description": "An https URL that is sent the task's JSON, signed as the Standard Webhooks specification "
        "says (secret: GET /api/v1/webhooks/secret), when the task reaches the events asked for",
    },
    "webhook_events": {
        "type": "array",
        "items": {"type": "string", "enum": ["started", "completed"]},
        "description": "When to call the webhook: `completed` (succeeded or failed; the default) and/or `started`",
    },
}


def webhook_target(values: Mapping[str, Any], settings: Settings) -> webhooks.Target | None:
    """The checked webhook of a request body (JSON object or form); 422 naming the problem."""
    events = values.get("webhook_events")
    if isinstance(events, str):  # a form field: comma-separated
        events = [e.strip() for e in events.split(",") if e.strip()]
    try:
        request = WebhookRequest.model_validate({"webhook": values.get("webhook"), "webhook_events": events})
    except ValidationError as exc:
        raise Unprocessable(describe_validation_errors(exc.errors())) from exc
    return webhooks.target_of(request, allow_private=settings.webhook_allow_private)


async def webhook_of_json_body(request: Request, settings: SettingsDep) -> webhooks.Target | None:
    """The webhook of a JSON request body whose model is read by FastAPI (it ignores these fields)."""
    try:
        body = await request.json()
    except ValueError:
        return None  # the body's own validation answers
    return webhook_target(body, settings) if isinstance(body, dict) else None


WebhookOfBody = Annotated[webhooks.Target | None, Depends(webhook_of_json_body)]


@router.get("/webhooks/secret", response_model=WebhookSecretPublic)
def read_webhook_secret(user: CurrentUser, session: SessionDep) -> WebhookSecretPublic:
    """The secret your webhooks are signed with (``whsec_<base64>``), created on first read."""
    return WebhookSecretPublic.model_validate(webhooks.secret_of(session, user.id or 0))


@router.post("/webhooks/secret/rotate", response_model=WebhookSecretPublic)
def rotate_webhook_secret(user: CurrentUser, session: SessionDep) -> WebhookSecretPublic:
    """A new signing secret; for the next 24 hours messages carry a second signature with the previous one."""
    return WebhookSecretPublic.model_validate(webhooks.rotate_secret(session, user.id or 0))


@router.get(
    "/predictions/{task_id}/webhook-deliveries", response_model=list[WebhookDeliveryPublic], responses=NOT_FOUND
)
def prediction_webhook_deliveries(
    task_id: str, user: CurrentUser, session: ReadSessionDep
) -> list[WebhookDeliveryPublic]:
    """Every attempt to deliver this prediction's webhook events, oldest first."""
    predictions.get_for_user(session, user_id=user.id or 0, task_id=task_id, with_inputs=False, with_outputs=False)
    return webhooks.deliveries_of(session, task_id)


@router.get(
    "/training-jobs/{job_id}/webhook-deliveries", response_model=list[WebhookDeliveryPublic], responses=NOT_FOUND
)
def training_job_webhook_deliveries(
    job_id: str, user: CurrentUser, session: ReadSessionDep
) -> list[WebhookDeliveryPublic]:
    """Every attempt to deliver this training job's webhook events, oldest first."""
    training.get_for_user(session, user_id=user.id or 0, job_id=job_id)
    return webhooks.deliveries_of(session, job_id)
