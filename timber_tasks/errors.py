"""The error hierarchy: one root, one base per layer, state carried as attributes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class TimberError(Exception):
    """Raised for every error this package reports on purpose."""


class ConfigError(TimberError):
    """Raised when settings or environment variables are missing or inconsistent."""


class ModelConfigError(TimberError):
    """Raised when a model YAML file is malformed or inconsistent."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        model: str | None = None,
        field: str | None = None,
    ) -> None:
        self.file = file
        self.model = model
        self.field = field
        self.message = message
        super().__init__(str(self))

    def __reduce__(self) -> tuple[Any, ...]:  # keep the type and fields through pickling (Celery does)
        return (_rebuild, (type(self), {"message": self.message, "file": self.file, "model": self.model,
                                        "field": self.field}))

    def __str__(self) -> str:
        where = [
            f"{label} {value!r}"
            for label, value in (("file", self.file), ("model", self.model), ("field", self.field))
            if value
        ]
        return f"{', '.join(where)}: {self.message}" if where else self.message


class ModelConfigErrors(ModelConfigError):
    """Raised when a set of model files has several errors; all are reported at once."""

    def __init__(self, errors: Sequence[ModelConfigError]) -> None:
        self.errors = list(errors)
        lines = "\n".join(f"  - {e}" for e in self.errors)
        super().__init__(f"{len(self.errors)} error(s) in model configuration:\n{lines}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.errors,))


class ModelNotFoundError(TimberError, LookupError):
    """Raised when a model name is not in the registry."""

    def __init__(self, name: str, suggestions: Sequence[str] = ()) -> None:
        self.name = name
        self.suggestions = list(suggestions)
        hint = f" Did you mean: {', '.join(self.suggestions)}?" if self.suggestions else ""
        super().__init__(f"model {name!r} is not registered.{hint}")

    def __str__(self) -> str:  # LookupError would quote the message otherwise
        return str(self.args[0])

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.name, self.suggestions))


class ValidationError(TimberError, ValueError):
    """Raised when a value written to a model breaks its type, nullability or validators."""

    def __init__(self, model: str, field: str | None, message: str) -> None:
        self.model = model
        self.field = field
        self.message = message
        where = f"{model}.{field}" if field else model
        super().__init__(f"{where}: {message}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.model, self.field, self.message))


class DatabaseError(TimberError):
    """Raised when the database layer fails in a way the caller should see."""


class MigrationError(DatabaseError):
    """Raised when generating or applying a migration fails."""


def _rebuild(cls: type[ModelConfigError], fields: dict[str, Any]) -> ModelConfigError:
    message = fields.pop("message")
    return cls(message, **fields)
