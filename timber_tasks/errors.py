"""The error hierarchy: one root, one base per layer, state carried as attributes."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any


class TimberError(Exception):
    """Raised for every error this package reports on purpose."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return

        @functools.wraps(init)
        def accepting_a_message(self: TimberError, *args: Any, **kw: Any) -> None:
            try:
                init(self, *args, **kw)
            except TypeError:
                # Celery hands a failed job's error to the caller as cls(*error.args), that is, with
                # the one formatted message: keep the type and the message rather than lose both.
                if kw or len(args) != 1 or not isinstance(args[0], str):
                    raise
                Exception.__init__(self, args[0])
                self.__dict__["message"] = args[0]

        cls.__init__ = accepting_a_message  # type: ignore[method-assign, assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        # Celery pickles a failure to check it travels; rebuild without calling __init__,
        # so every subclass keeps its type, message and attributes whatever its signature.
        return (_restore, (type(self), self.args, self.__dict__))


def _restore(cls: type[TimberError], args: tuple[Any, ...], state: dict[str, Any]) -> TimberError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


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



class ModelNotFoundError(TimberError, LookupError):
    """Raised when a model name is not in the registry."""

    def __init__(self, name: str, suggestions: Sequence[str] = ()) -> None:
        self.name = name
        self.suggestions = list(suggestions)
        # args are the constructor's, so cls(*args) (Celery's rebuild) gives the same error.
        super().__init__(name, self.suggestions)

    def __str__(self) -> str:
        hint = f" Did you mean: {', '.join(self.suggestions)}?" if self.suggestions else ""
        return f"model {self.name!r} is not registered.{hint}"


def _describe(model: str | None, ids: object = None, field: str | None = None) -> str:
    where = model or "?"
    if field:
        where += f".{field}"
    if ids is not None:
        where += f" (id {ids!r})"
    return where


class ModelScopedError(TimberError):
    """Base of errors about a model's rows: carries the model and the ids concerned."""

    def __init__(self, message: str, *, model: str | None = None, ids: object = None) -> None:
        self.model = model
        self.ids = ids
        self.message = message
        super().__init__(f"{_describe(model, ids)}: {message}" if model else message)


class ValidationError(TimberError, ValueError):
    """Raised when a value written to a model breaks its type, nullability or validators."""

    def __init__(self, model: str, field: str | None, message: str, *, ids: object = None) -> None:
        self.model = model
        self.field = field
        self.message = message
        self.ids = ids
        super().__init__(f"{_describe(model, ids, field)}: {message}")


class DatabaseError(ModelScopedError):
    """Raised when the database layer fails in a way the caller should see."""


class MigrationError(DatabaseError):
    """Raised when generating or applying a migration fails."""


class ServiceError(ModelScopedError):
    """Raised by the domain services; carries the model and the ids it concerns."""


class NotFoundError(ServiceError, LookupError):
    """Raised when a row asked for by id does not exist (or was soft-deleted)."""

    def __str__(self) -> str:  # LookupError would quote the message otherwise
        return str(self.args[0])


class AccessDeniedError(ServiceError, PermissionError):
    """Raised when the current app asks for another app's table, session type or row."""


class EnqueueError(TimberError):
    """Raised when delay() cannot record a job in the outbox (the database is down): nothing was sent."""

    def __init__(self, task: str, reason: str) -> None:
        self.task = task
        self.reason = reason
        super().__init__(f"job {task} was not enqueued: on this broker every job is first recorded in the "
                         f"database's outbox, and the database is unreachable ({reason}); nothing was sent, "
                         "so call delay() again once the database is back")


class DecryptionError(TimberError):
    """Raised when an encrypted field cannot be read with any configured key."""

    def __init__(self, model: str, field: str, row_id: object = None, reason: str = "") -> None:
        self.model = model
        self.field = field
        self.row_id = row_id
        hint = reason or ("no key in TIMBER_ENCRYPTION_KEYS decrypts it: was the key that wrote it "
                          "removed before `timber-tasks keys rotate` finished?")
        super().__init__(f"cannot decrypt {_describe(model, row_id, field)}: {hint}")
