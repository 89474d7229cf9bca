from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from app.api.deps import CurrentUser, SessionDep, SettingsDep, StoreDep
from app.api.routes.common import Limit, Offset
from app.api.text_guard import unstorable_text
from app.core.errors import BadRequest, PayloadTooLarge
from app.models.dataset import (
    AppendRowsRequest,
    Dataset,
    DatasetInfo,
    DatasetPublic,
    DatasetRows,
    DatasetVersion,
    DatasetVersionPublic,
)
from app.services import datasets

router = APIRouter(prefix="/datasets", tags=["training studio"])
# A dataset's name and target column, as stored.
MAX_FORM_TEXT = 255

DatasetId = Annotated[int, Path(ge=1, le=2**31 - 1)]
IncludeDeleted = Annotated[bool, Query(description="Also list soft-deleted datasets")]

_UPLOAD_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {
                    "file": {"type": "string", "format": "binary", "description": "UTF-8 CSV with a header row"},
                    "target": {"type": "string", "default": "target", "description": "The column to predict"},
                    "name": {"type": "string", "description": "A name for the dataset (default: the file name)"},
                },
            }
        }
    },
}


def to_public(dataset: Dataset, version: DatasetVersion) -> DatasetPublic:
    return DatasetPublic(
        id=dataset.id or 0,
        name=dataset.name,
        target=dataset.target,
        version=version.version,
        rows=version.rows,
        columns=version.columns,
        dtypes=version.dtypes,
        task=version.task,
        artifact_md5=version.artifact_md5,
        deleted=dataset.deleted_at is not None,
        created_at=dataset.created_at,
        updated_at=dataset.updated_at,
    )


def _form_text(form: Any, key: str) -> str | None:
    value = form.get(key)
    text = value.strip() if isinstance(value, str) and value.strip() else None
    if text is not None:
        _check_text(text, key)
    return text


def _check_text(text: str, key: str) -> None:
    if len(text) > MAX_FORM_TEXT:
        raise BadRequest(f"the form field {key!r} is longer than {MAX_FORM_TEXT} characters")
    if unstorable_text(text):
        raise BadRequest(f"the form field {key!r} contains a NUL character or is not valid Unicode text")


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=DatasetPublic,
    openapi_extra={"requestBody": _UPLOAD_BODY},
    responses={400: {"description": "The CSV cannot be used (see detail)"}, 413: {"description": "File too large"}},
)
async def upload_dataset(
    request: Request, user: CurrentUser, session: SessionDep, settings: SettingsDep, store: StoreDep
) -> Any:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "multipart/form-data":
        raise BadRequest("send a multipart form with a CSV 'file' (and optionally 'target' and 'name')")
    try:
        form = await request.form(max_files=1, max_fields=10, max_part_size=settings.dataset_max_bytes + 1)
    except Exception as exc:  # python-multipart raises several types for malformed bodies
        raise BadRequest(f"malformed multipart form: {exc}") from exc
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise BadRequest("the form needs a 'file' field with a CSV file")
    data = await upload.read(settings.dataset_max_bytes + 1)
    if len(data) > settings.dataset_max_bytes:
        raise PayloadTooLarge(f"the CSV file is larger than {settings.dataset_max_bytes} bytes")
    name = _form_text(form, "name") or upload.filename or "dataset.csv"
    _check_text(name, "name")
    dataset, version = await run_in_threadpool(
        datasets.create,
        session,
        store,
        settings,
        user_id=user.id or 0,
        name=name,
        data=data,
        target=_form_text(form, "target"),
    )
    return to_public(dataset, version)


@router.get("", response_model=list[DatasetPublic])
def list_datasets(
    user: CurrentUser,
    session: SessionDep,
    limit: Limit = 50,
    offset: Offset = 0,
    include_deleted: IncludeDeleted = False,
) -> list[DatasetPublic]:
    found = datasets.list_for_user(
        session, user_id=user.id or 0, include_deleted=include_deleted, limit=limit, offset=offset
    )
    return [to_public(d, datasets.version_of(session, d)) for d in found]


@router.get("/{dataset_id}", response_model=DatasetPublic, responses={404: {"description": "No such dataset"}})
def read_dataset(dataset_id: DatasetId, user: CurrentUser, session: SessionDep) -> DatasetPublic:
    dataset = datasets.get_for_user(session, user_id=user.id or 0, dataset_id=dataset_id)
    return to_public(dataset, datasets.version_of(session, dataset))


@router.get("/{dataset_id}/info", response_model=DatasetInfo, responses={404: {"description": "No such dataset"}})
def dataset_info(
    dataset_id: DatasetId, user: CurrentUser, session: SessionDep, settings: SettingsDep, store: StoreDep
) -> DatasetInfo:
    dataset = datasets.get_for_user(session, user_id=user.id or 0, dataset_id=dataset_id)
    version = datasets.version_of(session, dataset)
    columns, target_summary = datasets.describe(store, dataset, version, settings)
    return DatasetInfo(
        **to_public(dataset, version).model_dump(),
        column_summary=columns,
        target_summary=target_summary,
        versions=[DatasetVersionPublic.model_validate(v) for v in datasets.versions_of(session, dataset.id or 0)],
    )


@router.get("/{dataset_id}/rows", response_model=DatasetRows, responses={404: {"description": "No such dataset"}})
def read_rows(
    dataset_id: DatasetId,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
    offset: Offset = 0,
    limit: Annotated[int, Query(ge=1, le=1000, description="How many rows to return")] = 100,
    version: Annotated[int | None, Query(ge=1, le=2**31 - 1, description="A version other than the current")] = None,
) -> DatasetRows:
    dataset = datasets.get_for_user(session, user_id=user.id or 0, dataset_id=dataset_id)
    found = datasets.version_of(session, dataset, version)
    total, rows = datasets.rows_page(store, dataset, found, settings, offset, limit)
    return DatasetRows(dataset_id=dataset_id, version=found.version, total=total, offset=offset, limit=limit, rows=rows)


@router.post(
    "/{dataset_id}/rows",
    status_code=status.HTTP_201_CREATED,
    response_model=DatasetPublic,
    responses={400: {"description": "The rows do not fit the dataset"}, 404: {"description": "No such dataset"}},
)
def append_rows(
    dataset_id: DatasetId,
    body: AppendRowsRequest,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
) -> DatasetPublic:
    dataset = datasets.get_for_user(session, user_id=user.id or 0, dataset_id=dataset_id, include_deleted=False)
    if len(body.rows) > settings.dataset_max_rows:
        raise BadRequest(f"csv must have at most {settings.dataset_max_rows} rows")
    version = datasets.append_rows(session, store, settings, dataset, body.rows)
    return to_public(dataset, version)


@router.post("/{dataset_id}/reset", response_model=DatasetPublic, responses={404: {"description": "No such dataset"}})
def reset_dataset(dataset_id: DatasetId, user: CurrentUser, session: SessionDep) -> DatasetPublic:
    dataset = datasets.get_for_user(session, user_id=user.id or 0, dataset_id=dataset_id, include_deleted=False)
    return to_public(dataset, datasets.reset(session, dataset))


@router.post("/{dataset_id}/restore", response_model=DatasetPublic, responses={404: {"description": "No such dataset"}})
def restore_dataset(dataset_id: DatasetId, user: CurrentUser, session: SessionDep) -> DatasetPublic:
    dataset = datasets.get_for_user(session, user_id=user.id or 0, dataset_id=dataset_id)
    return to_public(datasets.restore(session, dataset), datasets.version_of(session, dataset))


@router.delete(
    "/{dataset_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={404: {"description": "No such dataset"}, 409: {"description": "Still used"}},
)
def delete_dataset(
    dataset_id: DatasetId,
    user: CurrentUser,
    session: SessionDep,
    store: StoreDep,
    hard: Annotated[bool, Query(description="Remove the dataset and its files from the store for good")] = False,
) -> None:
    dataset = datasets.get_for_user(session, user_id=user.id or 0, dataset_id=dataset_id)
    if hard:
        datasets.hard_delete(session, store, dataset)
    else:
        datasets.soft_delete(session, dataset)
