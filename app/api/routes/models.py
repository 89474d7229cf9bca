from __future__ import annotations

import re

from fastapi import APIRouter, Path

from app.api.deps import ReadSessionDep
from app.core.errors import NotFound
from app.models.catalog import MODEL_NAME_PATTERN, ModelPublic, ModelVersionPublic
from app.services import catalog

router = APIRouter(prefix="/models", tags=["models"])


@router.get("", response_model=list[ModelVersionPublic])
def list_models(session: ReadSessionDep) -> list[ModelVersionPublic]:
    models = catalog.list_catalog(session)
    owners = catalog.author_names(session, models)
    public = catalog.with_price_history(session, [catalog.to_public(m, owners) for m in models])
    return catalog.with_usage(session, public)


@router.get("/{name}", response_model=ModelPublic, responses={404: {"description": "No such model"}})
def read_model(session: ReadSessionDep, name: str = Path(max_length=64)) -> ModelPublic:
    if not re.fullmatch(MODEL_NAME_PATTERN, name):
        raise NotFound(f"model {name!r} not found")
    versions = catalog.published_versions_of(session, name)
    if not versions:
        raise NotFound(f"model {name!r} not found; GET /api/v1/models lists the catalog")
    owners = catalog.author_names(session, versions)
    current = next((v for v in versions if v.status == "published"), versions[0])
    public = catalog.with_usage(
        session, catalog.with_price_history(session, [catalog.to_public(v, owners) for v in versions])
    )
    shown = next(p for p in public if p.version == current.version)
    return ModelPublic.model_validate(shown, update={"versions": public})
