"""The demo data of ``demo_init.sh``: two users, credits and the default models. Running it twice changes nothing."""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine
from sqlmodel import Session

from app.core.config import Settings
from app.models.catalog import ModelStatus, ModelTask, ModelVersion
from app.models.user import Role, User
from app.services import catalog, compiling, ledger, users
from app.store.base import ArtifactStore

if TYPE_CHECKING:
    import pandas as pd

    from app.runtime.algorithms import Task
    from app.runtime.evaluation import TrainResult

DEMO_ADMIN_EMAIL = "demo-admin@example.com"
DEMO_CLIENT_EMAIL = "demo-client@example.com"
DEMO_CLIENT_CREDITS = 600
DEMO_TOP_UP_KEY = "demo-init-initial-top-up"


@dataclass(frozen=True)
class DemoCredentials:
    admin_email: str
    admin_password: str
    client_email: str
    client_password: str


@dataclass
class SeedReport:
    credentials: DemoCredentials
    created_users: list[str]
    published_models: list[str]
    existing_models: list[str]
    client_balance: int


# -- the default catalog ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoModelSpec:
    name: str
    description: str
    task: Task
    algorithm: str
    hyperparameters: dict[str, Any]
    price_per_row: int
    target: str
    load_frame: Callable[[], pd.DataFrame]

    def dataset(self) -> tuple[pd.DataFrame, str]:
        """The training data and the name of its target column."""
        return self.load_frame(), self.target

    def train(self) -> TrainResult:
        from app.runtime.training import train  # scikit-learn and pandas, imported when used

        return train(self.load_frame(), self.target, self.algorithm, self.hyperparameters, self.task)


def _diabetes() -> pd.DataFrame:
    from sklearn.datasets import load_diabetes

    frame: pd.DataFrame = load_diabetes(as_frame=True).frame
    return frame


def _iris() -> pd.DataFrame:
    from sklearn.datasets import load_iris

    bunch = load_iris(as_frame=True)
    frame: pd.DataFrame = bunch.frame.copy()
    # Class names as the target, so predictions read "setosa" rather than 0.
    frame["species"] = [str(bunch.target_names[i]) for i in frame.pop("target")]
    frame.columns = [str(c).replace(" (cm)", "_cm").replace(" ", "_") for c in frame.columns]
    return frame


def demo_models() -> list[DemoModelSpec]:
    """The default catalog, trained from datasets scikit-learn ships (nothing is downloaded)."""
    return [
        DemoModelSpec(
            name="diabetes-linear",
            description="Diabetes progression after one year (linear regression on 10 standardised measurements).",
            task="regression",
            algorithm="LinearRegression",
            hyperparameters={},
            price_per_row=1,
            target="target",
            load_frame=_diabetes,
        ),
        DemoModelSpec(
            name="diabetes-forest",
            description="Diabetes progression after one year (random forest on 10 standardised measurements).",
            task="regression",
            algorithm="RandomForestRegressor",
            hyperparameters={"n_estimators": 50, "max_depth": 8, "random_state": 42},
            price_per_row=2,
            target="target",
            load_frame=_diabetes,
        ),
        DemoModelSpec(
            name="iris-logistic",
            description="Iris species from sepal and petal sizes in cm (logistic regression).",
            task="classification",
            algorithm="LogisticRegression",
            hyperparameters={"max_iter": 500},
            price_per_row=1,
            target="species",
            load_frame=_iris,
        ),
        DemoModelSpec(
            name="iris-forest",
            description="Iris species from sepal and petal sizes in cm (random forest).",
            task="classification",
            algorithm="RandomForestClassifier",
            hyperparameters={"n_estimators": 50, "random_state": 42},
            price_per_row=3,
            target="species",
            load_frame=_iris,
        ),
    ]


def demo_credentials(settings: Settings) -> DemoCredentials:
    """Passwords from MLMARKET_DEMO_*_PASSWORD, else generated once and kept in the data folder (mode 600)."""
    path = settings.data_dir / "demo_credentials.json"
    stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    admin = os.environ.get("MLMARKET_DEMO_ADMIN_PASSWORD") or stored.get("admin_password") or secrets.token_urlsafe(12)
    client = (
        os.environ.get("MLMARKET_DEMO_CLIENT_PASSWORD") or stored.get("client_password") or secrets.token_urlsafe(12)
    )
    if stored != {"admin_password": admin, "client_password": client}:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600, exist_ok=True)
        path.write_text(json.dumps({"admin_password": admin, "client_password": client}))
    return DemoCredentials(DEMO_ADMIN_EMAIL, admin, DEMO_CLIENT_EMAIL, client)


def publish_trained(
    session: Session,
    store: ArtifactStore,
    *,
    name: str,
    result: TrainResult,
    task: ModelTask,
    algorithm: str,
    price_per_row: int,
    owner_id: int | None,
    description: str,
    status: ModelStatus = ModelStatus.published,
) -> ModelVersion:
    """Saves a trained pipeline as a skops artifact, pushes it through DVC and adds it to the catalog."""
    from app.runtime.model import ModelRuntime, save_artifact  # scikit-learn and skops, imported when used

    version = len(catalog.versions_of(session, name)) + 1
    with tempfile.TemporaryDirectory(prefix="mlmarket-artifact-") as tmp:
        artifact = Path(tmp) / "model.skops"
        save_artifact(result.pipeline, artifact, result.features)
        classes = ModelRuntime.load(artifact).classes
        ref = store.put(artifact, f"models/{name}/v{version}/model.skops")
    compiled = compiling.compile_and_store(
        store, result.pipeline, result.features, task.value, result.holdout, f"models/{name}/v{version}/model.onnx"
    )
    model = catalog.publish_version(
        session,
        name=name,
        task=task,
        algorithm=algorithm,
        price_per_row=price_per_row,
        features=result.features,
        artifact=ref,
        owner_id=owner_id,
        description=description,
        classes=list(classes) if classes is not None else None,
        metrics=dict(result.metrics),
        status=status,
    )
    compiling.apply(model, compiled)
    session.add(model)
    session.commit()
    return model


def _ensure_user(session: Session, email: str, password: str, role: Role, created: list[str]) -> User:
    user = users.get_user_by_email(session, email)
    if user is None:
        user = users.create_user(session, email=email, password=password, role=role, full_name=email.split("@")[0])
        created.append(email)
    return user


def publish_demo_model(
    session: Session, store: ArtifactStore, spec: DemoModelSpec, owner_id: int | None
) -> ModelVersion:
    return publish_trained(
        session,
        store,
        name=spec.name,
        result=spec.train(),
        task=ModelTask(spec.task),
        algorithm=spec.algorithm,
        price_per_row=spec.price_per_row,
        owner_id=owner_id,
        description=spec.description,
    )


def seed(engine: Engine, store: ArtifactStore, settings: Settings, *, models: list[str] | None = None) -> SeedReport:
    creds = demo_credentials(settings)
    created: list[str] = []
    published: list[str] = []
    existing: list[str] = []
    with Session(engine, expire_on_commit=False) as session:
        admin = _ensure_user(session, creds.admin_email, creds.admin_password, Role.admin, created)
        client = _ensure_user(session, creds.client_email, creds.client_password, Role.client, created)
        ledger.top_up(session, user_id=client.id or 0, amount=DEMO_CLIENT_CREDITS, idempotency_key=DEMO_TOP_UP_KEY)
        for spec in demo_models():
            if models is not None and spec.name not in models:
                continue
            if catalog.versions_of(session, spec.name):
                existing.append(spec.name)
                continue
            publish_demo_model(session, store, spec, owner_id=admin.id)
            published.append(spec.name)
        balance = ledger.balance_of(session, client.id or 0)
    return SeedReport(creds, created, published, existing, balance)


def describe(report: SeedReport) -> dict[str, Any]:
    return {
        "demo_admin": {"email": report.credentials.admin_email, "password": report.credentials.admin_password},
        "demo_client": {"email": report.credentials.client_email, "password": report.credentials.client_password},
        "created_users": report.created_users,
        "published_models": report.published_models,
        "existing_models": report.existing_models,
        "client_balance": report.client_balance,
    }
