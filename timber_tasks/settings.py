"""Settings: keyword arguments win over the environment, the environment over embedded defaults."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, SecretStr, field_validator
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
}


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

    @field_validator("model_config_dirs", mode="before")
    @classmethod
    def _split_dirs(cls, value: Any) -> Any:
        if isinstance(value, str | Path):
            return tuple(Path(p) for p in str(value).split(os.pathsep) if p)
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
