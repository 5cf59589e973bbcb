"""timber-tasks: Timber's YAML-declared models and their heavy work on Celery workers."""

from timber_tasks.db import DatabaseManager
from timber_tasks.errors import (
    AccessDeniedError,
    ConfigError,
    DatabaseError,
    DecryptionError,
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


def __getattr__(name: str) -> object:
    # `celery -A timber_tasks` looks for `app`; importing Celery only then keeps the library light.
    if name in ("app", "celery"):
        from timber_tasks.celery_app import app

        return app
    raise AttributeError(f"module 'timber_tasks' has no attribute {name!r}")


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
]
