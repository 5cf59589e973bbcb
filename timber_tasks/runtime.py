"""initialize_timber(): settings, model registry and database manager of one process."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from timber_tasks.db import DatabaseManager
from timber_tasks.errors import ConfigError, TimberError
from timber_tasks.jobs.tables import system_metadata
from timber_tasks.models.registry import ModelRegistry
from timber_tasks.settings import Settings


@dataclass
class Timber:
    """What initialize_timber() returns: the settings, the registry and the database."""

    settings: Settings
    registry: ModelRegistry
    db: DatabaseManager

    @property
    def app_name(self) -> str:
        return self.settings.app_name

    def get_model(self, name: str) -> type[Any]:
        return self.registry.get(name)

    def create_tables(self) -> None:
        """Create missing tables: the YAML models' and the platform's own (jobs, outbox, dead letters)."""
        self.db.create_tables(self.registry.metadata)
        self.db.create_tables(system_metadata)


_current: Timber | None = None
_current_pid: int | None = None
_lock = threading.Lock()


def initialize_timber(
    app_name: str | None = None,
    model_config_dirs: list[str | Path] | None = None,
    database_url: str | None = None,
    create_tables: bool = True,
    **settings: Any,
) -> Timber:
    """Load every model YAML under the dirs, build the models and (optionally) create tables.

    Arguments not given come from the environment, then from the embedded defaults.
    The result also becomes the process's current Timber, used by get_model().
    """
    global _current, _current_pid
    resolved = Settings.load(
        app_name=app_name,
        model_config_dirs=tuple(Path(d) for d in model_config_dirs) if model_config_dirs else None,
        database_url=database_url,
        **settings,
    )
    db = DatabaseManager(resolved.resolved_database_url, slow_query_ms=resolved.slow_query_ms)
    registry = ModelRegistry.from_dirs(
        resolved.model_config_dirs, app_name=resolved.app_name, dialect=db.dialect
    )
    timber = Timber(settings=resolved, registry=registry, db=db)
    if create_tables:
        timber.create_tables()
    with _lock:
        if _current is not None and _current.db is not db:
            _current.db.dispose()
        _current, _current_pid = timber, os.getpid()
    return timber


def current() -> Timber:
    """The Timber of this process; raises when initialize_timber() was never called."""
    if _current is None:
        raise ConfigError(
            "Timber is not initialized in this process: call timber_tasks.initialize_timber() first"
        )
    return _current


def for_this_process() -> Timber:
    """The Timber of this process, loading it (registry once, own connections) after a fork or at first use."""
    if _current is None or _current_pid != os.getpid():
        return initialize_timber(create_tables=False)
    return _current


def get_model(name: str) -> type[Any]:
    """The mapped class of a registered model; unknown names list close matches."""
    return current().get_model(name)


def reset() -> None:
    """Forget the current Timber (tests, and workers that reload the registry)."""
    global _current
    with _lock:
        if _current is not None:
            _current.db.dispose()
        _current = None


def dialect_of(url: str) -> str:
    try:
        return make_url(url).get_backend_name()
    except Exception as exc:
        raise TimberError(f"cannot read database URL: {exc}") from exc
