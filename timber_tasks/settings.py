"""Settings: keyword arguments win over the environment, the environment over embedded defaults."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    field_validator,
)
from sqlalchemy.engine import make_url

# Environment variable for each setting; the names are part of the public interface.
ENV_NAMES: dict[str, str] = {
    "app_name": "TIMBER_APP_NAME",
    "model_config_dirs": "TIMBER_MODEL_CONFIG_DIRS",
    "data_dir": "TIMBER_DATA_DIR",
    "database_url": "DATABASE_URL",
    "broker_url": "BROKER_URL",
    "result_backend_url": "RESULT_BACKEND_URL",
    "redis_url": "REDIS_URL",
    "qdrant_url": "QDRANT_URL",
    "encryption_keys": "TIMBER_ENCRYPTION_KEYS",
    "migrations_dir": "TIMBER_MIGRATIONS_DIR",
    "slow_query_ms": "TIMBER_SLOW_QUERY_MS",
    "beat_schedule_file": "TIMBER_BEAT_SCHEDULE",
    "workers_dir": "TIMBER_WORKERS_DIR",
    "task_time_limit": "TIMBER_TASK_TIME_LIMIT",
    "visibility_timeout": "TIMBER_VISIBILITY_TIMEOUT",
    "outbox_republish_after": "TIMBER_OUTBOX_REPUBLISH_AFTER",
    "broker_polling_interval": "TIMBER_BROKER_POLLING_INTERVAL",
    "task_max_retries": "TIMBER_TASK_MAX_RETRIES",
    "redelivery_sweep": "TIMBER_REDELIVERY_SWEEP",
    "retry_backoff": "TIMBER_RETRY_BACKOFF",
    "gdpr_ledger_file": "TIMBER_GDPR_LEDGER",
    "gdpr_subject_key": "TIMBER_GDPR_SUBJECT_KEY",
    "embedding_int8": "TIMBER_EMBEDDING_INT8",
    "embedding_batch_size": "TIMBER_EMBEDDING_BATCH_SIZE",
    "embedding_threads": "TIMBER_EMBEDDING_THREADS",
}


EMBEDDED_BROKER_URL = "maildir://"  # timber_tasks.brokers.maildir: folders under the data dir

# The PostgreSQL driver we ship: SQLAlchemy would pick psycopg (3) for a bare postgresql://.
POSTGRES_SCHEMES = {"postgresql": "postgresql+psycopg2", "postgres": "postgresql+psycopg2"}


def with_shipped_driver(url: str) -> str:
    """`postgresql://` and `postgres://` URLs spelled with the psycopg2 driver; others unchanged."""
    scheme, sep, rest = url.partition("://")
    return f"{POSTGRES_SCHEMES[scheme]}{sep}{rest}" if sep and scheme in POSTGRES_SCHEMES else url


def mask_url(url: str | None) -> str | None:
    """Return the URL with any password replaced, for logs and reprs."""
    if not url:
        return url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not an SQLAlchemy-style URL: hide everything after the scheme
        scheme, _, _ = url.partition("://")
        return f"{scheme}://***"


class Settings(BaseModel):
    """Resolved settings of one process."""

    model_config = ConfigDict(frozen=True)

    app_name: str = "timber"
    model_config_dirs: tuple[Path, ...] = (Path("model_configs"),)
    data_dir: Path = Path("var")
    database_url: str | None = None
    broker_url: str | None = None
    result_backend_url: str | None = None
    redis_url: str | None = None
    qdrant_url: str | None = None
    encryption_keys: tuple[SecretStr, ...] = ()
    migrations_dir: Path = Path("migrations")
    slow_query_ms: float = 500.0
    beat_schedule_file: Path = Path("beat_schedule.yaml")
    workers_dir: Path = Path("workers")
    task_time_limit: PositiveInt = 1800  # seconds; a pool's YAML may set its own, lower or higher
    visibility_timeout: PositiveInt = 3600  # Redis redelivers unacked jobs after this: must exceed every limit
    redelivery_sweep: PositiveInt = 10  # seconds between Redis scans for jobs a dead worker left unacked
    # Embedded brokers: a published job not finished after this many seconds is published again.
    outbox_republish_after: PositiveFloat | None = None
    broker_polling_interval: PositiveFloat = 0.02  # seconds an idle embedded consumer waits between polls
    task_max_retries: NonNegativeInt = 5  # for transient faults only; bad input never retries
    retry_backoff: PositiveFloat = 1.0  # seconds before the first retry; doubles, capped at 60, jittered
    gdpr_ledger_file: Path | None = None  # erasure ledger kept outside the database (default: in the data dir)
    # The key of the GDPR records' subject hashes; unlike TIMBER_ENCRYPTION_KEYS it is never rotated,
    # so the erasure ledger stays matchable once old Fernet keys are dropped (default: from those keys).
    gdpr_subject_key: SecretStr | None = None
    embedding_int8: bool = False  # int8 encoders for models whose YAML does not choose (vector_search.int8)
    embedding_batch_size: PositiveInt = 64  # texts per model.encode call
    embedding_threads: NonNegativeInt = 0  # torch threads per embedding process; 0 leaves torch's default

    @field_validator("model_config_dirs", mode="before")
    @classmethod
    def _split_dirs(cls, value: Any) -> Any:
        if isinstance(value, str | Path):
            return tuple(Path(p) for p in str(value).split(os.pathsep) if p)
        return value

    @field_validator("database_url")
    @classmethod
    def _shipped_driver(cls, value: str | None) -> str | None:
        return with_shipped_driver(value) if value else value

    @field_validator("gdpr_subject_key")
    @classmethod
    def _long_subject_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return value
        parts = [p.strip() for p in value.get_secret_value().split(",")]
        if not all(parts) or any(len(p) < 32 for p in parts):
            raise ValueError("TIMBER_GDPR_SUBJECT_KEY: comma-separated keys of 32 characters or more, the one "
                             "that writes first (a random secret: `timber-tasks keys generate` prints one)")
        return value

    @field_validator("encryption_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(k.strip() for k in value.split(",") if k.strip())
        return value

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from overrides, then the environment, then the defaults."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {
            field: env[name] for field, name in ENV_NAMES.items() if env.get(name)
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def resolved_database_url(self) -> str:
        """The database URL, or the embedded SQLite file under the data dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'timber.db').resolve()}"

    @property
    def resolved_broker_url(self) -> str:
        """The broker URL, or the embedded folder broker (no server, supports fanout)."""
        return self.broker_url or EMBEDDED_BROKER_URL

    @property
    def resolved_result_backend_url(self) -> str:
        if self.result_backend_url:  # db+postgresql:// would pick psycopg (3), which is not shipped
            scheme, sep, rest = self.result_backend_url.partition("+")
            return f"db+{with_shipped_driver(rest)}" if scheme == "db" and sep else self.result_backend_url
        return f"db+sqlite:///{(self.data_dir / 'celery-results.db').resolve()}"

    @property
    def republish_after(self) -> float:
        """Long enough that a job still running under its time limit is not published twice."""
        return self.outbox_republish_after or float(self.task_time_limit + 60)

    def __repr__(self) -> str:
        shown = {
            "app_name": self.app_name,
            "database_url": mask_url(self.resolved_database_url),
            "broker_url": mask_url(self.broker_url),
            "redis_url": mask_url(self.redis_url),
            "qdrant_url": mask_url(self.qdrant_url),
            "encryption_keys": f"<{len(self.encryption_keys)} key(s)>",
        }
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"

    __str__ = __repr__
