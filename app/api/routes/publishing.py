"""Publishing trained models to the catalog (the read side of /models is in models.py)."""

from __future__ import annotations

import re

from fastapi import APIRouter, Path, status

from app.api.deps import CurrentUser, SessionDep
from app.core.errors import NotFound
from app.models.catalog import MODEL_NAME_PATTERN, ModelVersionPublic
from app.models.training import PublishRequest
from app.models.user import User
from app.services import catalog, publishing

router = APIRouter(prefix="/models", tags=["training studio"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ModelVersionPublic,
    responses={404: {"description": "No such training job"}, 409: {"description": "No model yet, or a taken name"}},
)
def publish_model(body: PublishRequest, user: CurrentUser, session: SessionDep) -> ModelVersionPublic:
    model = publishing.publish(
        session,
        user_id=user.id or 0,
        job_id=body.training_job_id,
        name=body.name,
        description=body.description,
        price_per_row=body.price_per_row,
    )
    return catalog.to_public(model, _me(user))


@router.post(
    "/{name}/unpublish", response_model=list[ModelVersionPublic], responses={404: {"description": "Not your model"}}
)
def unpublish_model(
    user: CurrentUser, session: SessionDep, name: str = Path(max_length=64)
) -> list[ModelVersionPublic]:
    if not re.fullmatch(MODEL_NAME_PATTERN, name):
        raise NotFound(f"model {name!r} not found among your models")
    versions = publishing.unpublish(session, user_id=user.id or 0, name=name)
    return [catalog.to_public(v, _me(user)) for v in versions]


def _me(user: User) -> dict[int, str]:
    return {user.id or 0: catalog.public_name(user.id or 0, user.full_name)}
