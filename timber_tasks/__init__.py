"""timber-tasks: Timber's YAML-declared models and their heavy work on Celery workers."""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from timber_tasks.db import DatabaseManager
    from timber_tasks.errors import (
        AccessDeniedError,
        ConfigError,
        DatabaseError,
        DecryptionError,
        EnqueueError,
        MigrationError,
        ModelConfigError,
        ModelConfigErrors,
        ModelNotFoundError,
        NotFoundError,
        ServiceError,
        TimberError,
        ValidationError,
    )
    from timber_tasks.features.cache import get_cached, warm_cache
    from timber_tasks.features.encryption import generate_key, lookup_clause, rotate_encryption_keys
    from timber_tasks.models.records import to_jsonable, validate_record
    from timber_tasks.models.registry import ModelRegistry
    from timber_tasks.models.types import register_type
    from timber_tasks.models.validators import register_validator
    from timber_tasks.runtime import Timber, current, get_model, initialize_timber
    from timber_tasks.settings import Settings

# Where each public name lives.
_LAZY = {
    "DatabaseManager": "timber_tasks.db",
    "AccessDeniedError": "timber_tasks.errors",
    "ConfigError": "timber_tasks.errors",
    "DatabaseError": "timber_tasks.errors",
    "DecryptionError": "timber_tasks.errors",
    "EnqueueError": "timber_tasks.errors",
    "MigrationError": "timber_tasks.errors",
    "ModelConfigError": "timber_tasks.errors",
    "ModelConfigErrors": "timber_tasks.errors",
    "ModelNotFoundError": "timber_tasks.errors",
    "NotFoundError": "timber_tasks.errors",
    "ServiceError": "timber_tasks.errors",
    "TimberError": "timber_tasks.errors",
    "ValidationError": "timber_tasks.errors",
    "get_cached": "timber_tasks.features.cache",
    "warm_cache": "timber_tasks.features.cache",
    "generate_key": "timber_tasks.features.encryption",
    "lookup_clause": "timber_tasks.features.encryption",
    "rotate_encryption_keys": "timber_tasks.features.encryption",
    "to_jsonable": "timber_tasks.models.records",
    "validate_record": "timber_tasks.models.records",
    "ModelRegistry": "timber_tasks.models.registry",
    "register_type": "timber_tasks.models.types",
    "register_validator": "timber_tasks.models.validators",
    "Timber": "timber_tasks.runtime",
    "current": "timber_tasks.runtime",
    "get_model": "timber_tasks.runtime",
    "initialize_timber": "timber_tasks.runtime",
    "Settings": "timber_tasks.settings",
}


def __getattr__(name: str) -> object:
    # Imported on first use: `timber-tasks --help` and the commands that need no database start
    # without SQLAlchemy, pydantic or Celery. `celery -A timber_tasks` looks for `app`.
    if name in ("app", "celery"):
        from timber_tasks.celery_app import app

        return app
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'timber_tasks' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    # set-up
    "initialize_timber",
    "get_model",
    "current",
    "Timber",
    "Settings",
    # models
    "ModelRegistry",
    "register_type",
    "register_validator",
    "validate_record",
    "to_jsonable",
    # database
    "DatabaseManager",
    # features (plain functions; the Celery tasks wrap rotate_encryption_keys and warm_cache)
    "rotate_encryption_keys",
    "generate_key",
    "lookup_clause",
    "warm_cache",
    "get_cached",
    # errors
    "TimberError",
    "ConfigError",
    "ModelConfigError",
    "ModelConfigErrors",
    "ModelNotFoundError",
    "ValidationError",
    "DatabaseError",
    "MigrationError",
    "ServiceError",
    "NotFoundError",
    "AccessDeniedError",
    "DecryptionError",
    "EnqueueError",
]
