"""One settings object for the whole of mlmarket, read from ``MLMARKET_*`` variables.

The embedded default (no variable set) keeps everything under a local data
folder: a SQLite database and a generated secret key. Production refuses to
start without a real secret.
"""

from __future__ import annotations

import secrets
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Secrets that appear in examples and tutorials. Production refuses them.
KNOWN_DEFAULT_SECRETS = frozenset(
    {
        "",
        "changeme",
        "change-me",
        "changethis",
        "secret",
        "secret-key",
        "secret_key",
        "dev",
        "development",
        "test",
        "mlmarket",
        "please-change-me",
    }
)
MIN_PRODUCTION_SECRET_LENGTH = 32


class Environment(StrEnum):
    development = "development"
    test = "test"
    production = "production"


class ConfigError(RuntimeError):
    """The configuration cannot be used; the message says which variable to fix."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MLMARKET_", env_file=None, extra="ignore")

    env: Environment = Environment.development
    data_dir: Path = Path("data")
    database_url: str | None = None
    secret_key: str | None = Field(default=None, repr=False)
    access_token_expire_minutes: int = Field(default=60, ge=1, le=60 * 24 * 30)
    login_max_failures: int = Field(default=10, ge=1)
    login_window_seconds: float = Field(default=60.0, gt=0.0)
    # Failed sign-ins of one account from all addresses together, per window: a looser ceiling than the one per
    # (account, address) above, so tries spread over many addresses are slowed too.
    login_max_failures_per_account: int = Field(default=100, ge=1)
    # Trusted reverse proxies: comma-separated addresses or networks whose X-Forwarded-For / X-Forwarded-Proto
    # the API believes ("*": any). Empty (the default): none, so the client address is the TCP peer's.
    forwarded_allow_ips: str = ""
    # /docs, /redoc and /openapi.json: on by default, except in production.
    docs_enabled: bool | None = None
    # When set, GET /metrics needs "Authorization: Bearer <this token>".
    metrics_token: str | None = Field(default=None, repr=False)
    # Send Strict-Transport-Security on every answer, not only on https requests (behind a TLS-terminating proxy).
    hsts: bool = False
    # Readiness stays 200 (reporting "degraded") this long after the broker or the store became unreachable.
    readiness_grace_seconds: float = Field(default=60.0, ge=0.0, le=3600.0)
    max_top_up: int = Field(default=1_000_000, ge=1)
    max_request_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    author_share_percent: int = Field(default=70, ge=0, le=100)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    # API worker processes of `mlmarket serve` (PostgreSQL and RabbitMQ only: the embedded default is one process).
    api_workers: int = Field(default=1, ge=1, le=64)
    log_level: str = "info"
    log_format: Literal["json", "text"] = "json"
    db_pool_size: int = Field(default=10, ge=1)
    s3_endpoint_url: str | None = None
    s3_bucket: str | None = None
    s3_prefix: str = "mlmarket"
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = Field(default=None, repr=False)
    s3_region: str = "us-east-1"
    store_dir: Path | None = None
    model_cache_max_models: int = Field(default=16, ge=1)
    model_cache_max_bytes: int = Field(default=512 * 1024 * 1024, ge=1)
    # Queue and workers. No broker URL: the embedded in-process queue with a worker inside the API.
    broker_url: str | None = Field(default=None, repr=False)
    broker_quorum_queues: bool = True
    run_worker_in_api: bool | None = None
    worker_prefetch: int = Field(default=64, ge=1, le=1000)
    worker_health_host: str = "0.0.0.0"  # noqa: S104 - probes reach the pod from outside
    worker_health_port: int = Field(default=9100, ge=0, le=65535)
    task_max_attempts: int = Field(default=3, ge=1, le=20)
    retry_base_delay_seconds: float = Field(default=1.0, ge=0.0, le=600.0)
    outbox_poll_seconds: float = Field(default=0.5, gt=0.0, le=60.0)
    # An open task untouched this long has its message published again (a lost message cannot strand it).
    task_stale_seconds: float = Field(default=300.0, ge=1.0, le=7 * 24 * 3600.0)
    # Synchronous inference (Open Inference Protocol). Requests that arrive while a batch is being served are
    # served together as the next batch (one predict per model, one bill); a request on an idle server never waits.
    batching_enabled: bool = True
    batch_max_rows: int = Field(default=64, ge=1, le=100_000)
    # gRPC Open Inference Protocol on its own port (0: no gRPC server), bound to the same host as the API.
    grpc_port: int = Field(default=8081, ge=0, le=65535)
    # A bearer token's user is remembered this long: a deactivated user is refused within this time.
    auth_cache_seconds: float = Field(default=5.0, ge=0.0, le=300.0)
    # The in-memory view of the catalog is dropped on publish and unpublish (in every API process on PostgreSQL,
    # through LISTEN/NOTIFY) and at the latest after this long.
    catalog_cache_seconds: float = Field(default=30.0, ge=0.0, le=3600.0)
    # Prediction requests.
    predict_max_rows: int = Field(default=10_000, ge=1)
    predict_max_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    # Training studio: dataset uploads and the price of training.
    dataset_max_columns: int = Field(default=50, ge=2)
    dataset_max_rows: int = Field(default=10_000, ge=1)
    dataset_max_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    training_price_per_1000_rows: int = Field(default=10, ge=1)
    # Signed webhooks. Receivers must be https on public addresses unless webhook_allow_private (local use): then
    # http and private, loopback and link-local addresses are allowed too. A failed delivery is retried with
    # exponential backoff (base, 2 x base, ..., capped) up to webhook_max_attempts times in all.
    webhook_allow_private: bool = False
    webhook_timeout_seconds: float = Field(default=5.0, gt=0.0, le=60.0)
    webhook_max_attempts: int = Field(default=6, ge=1, le=20)
    webhook_retry_base_seconds: float = Field(default=20.0, ge=0.0, le=3600.0)
    webhook_retry_max_seconds: float = Field(default=600.0, ge=0.0, le=24 * 3600.0)
    webhook_concurrency: int = Field(default=16, ge=1, le=256)
    # Training recovery: a worker holds a running job, shard or merge for this long and renews the lease every
    # third of it; once it has run out (the worker died), the job is published again and another worker takes it.
    training_lease_seconds: float = Field(default=30.0, ge=1.0, le=3600.0)
    # A queued training job or shard untouched this long has its message published again (a lost message).
    training_stale_seconds: float = Field(default=300.0, ge=1.0, le=7 * 24 * 3600.0)
    # How often the outbox relay looks for expired leases and stale training jobs.
    training_sweep_seconds: float = Field(default=10.0, gt=0.0, le=3600.0)
    # Store hygiene: objects in the store no dataset, job or model refers to are removed by `mlmarket store gc`
    # and by the training worker every store_gc_interval_seconds (0: never), once older than the grace period.
    store_gc_interval_seconds: float = Field(default=3600.0, ge=0.0)
    store_gc_grace_seconds: float = Field(default=3600.0, ge=0.0)

    @model_validator(mode="after")
    def _refuse_default_secret_in_production(self) -> Settings:
        if self.env is Environment.production:
            key = self.secret_key
            if key is None or key.strip().lower() in KNOWN_DEFAULT_SECRETS:
                raise ValueError(
                    "MLMARKET_SECRET_KEY must be set to a random value in production "
                    "(for example: python -c 'import secrets; print(secrets.token_urlsafe(48))')"
                )
            if len(key) < MIN_PRODUCTION_SECRET_LENGTH:
                raise ValueError(
                    f"MLMARKET_SECRET_KEY must be at least {MIN_PRODUCTION_SECRET_LENGTH} characters long in production"
                )
            if self.database_url is None:
                raise ValueError("MLMARKET_DATABASE_URL must be set in production")
        return self

    @model_validator(mode="after")
    def _one_process_when_embedded(self) -> Settings:
        if self.api_workers > 1 and (self.broker_url is None or self.database_url is None or self.is_sqlite):
            raise ValueError(
                "MLMARKET_API_WORKERS above 1 needs MLMARKET_DATABASE_URL (PostgreSQL) and MLMARKET_BROKER_URL: "
                "the embedded default keeps its queue and worker in one process"
            )
        return self

    @property
    def sqlalchemy_url(self) -> str:
        url = self.database_url or f"sqlite:///{(self.data_dir / 'mlmarket.db').as_posix()}"
        # psycopg 3 is the only PostgreSQL driver mlmarket ships with.
        for prefix in ("postgresql://", "postgres://", "postgresql+psycopg2://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix) :]
        return url

    @property
    def docs_on(self) -> bool:
        return self.env is not Environment.production if self.docs_enabled is None else self.docs_enabled

    @property
    def embedded_queue(self) -> bool:
        return self.broker_url is None

    @property
    def worker_in_api(self) -> bool:
        return self.embedded_queue if self.run_worker_in_api is None else self.run_worker_in_api

    @property
    def is_sqlite(self) -> bool:
        return self.sqlalchemy_url.startswith("sqlite")

    def resolved_secret_key(self) -> str:
        """The signing key: the configured one, or one generated once and kept in the data folder."""
        if self.secret_key:
            return self.secret_key
        if self.env is Environment.production:  # pragma: no cover - the validator refuses this
            raise ConfigError("MLMARKET_SECRET_KEY is required in production")
        path = self.data_dir / "secret_key"
        if path.exists():
            stored = path.read_text().strip()
            if stored:
                return stored
        self.data_dir.mkdir(parents=True, exist_ok=True)
        generated = secrets.token_urlsafe(48)
        path.touch(mode=0o600, exist_ok=True)
        path.write_text(generated)
        return generated


@lru_cache
def get_settings() -> Settings:
    return Settings()
