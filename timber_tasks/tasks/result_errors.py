"""Our errors cross the result backend whole: type, message and attributes (.model, .field, .ids).

With a JSON result serializer Celery stores a failure as its type, module and `args`, and the
caller rebuilds it as `cls(*args)`: every attribute set in `__init__` is lost. The stored
failure gets one more key, the error's attributes as JSON, put back on the rebuilt error.
"""

from __future__ import annotations

import json
from typing import Any

from celery.backends.base import Backend

from timber_tasks.errors import TimberError

STATE_KEY = "timber_state"


def _jsonable(value: Any) -> Any:
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        return str(value)


def state_of(error: TimberError) -> dict[str, Any]:
    return {name: _jsonable(value) for name, value in vars(error).items() if not name.startswith("_")}


def install() -> None:
    """Patch Celery's backend base once per process (idempotent); every result backend inherits it."""
    if getattr(Backend, "_timber_errors", False):
        return
    prepare, to_python = Backend.prepare_exception, Backend.exception_to_python

    def prepare_exception(self: Backend, exc: BaseException, serializer: str | None = None) -> Any:
        prepared = prepare(self, exc, serializer)
        if isinstance(exc, TimberError) and isinstance(prepared, dict):
            prepared[STATE_KEY] = state_of(exc)
        return prepared

    def exception_to_python(self: Backend, exc: Any) -> Any:
        rebuilt = to_python(self, exc)
        state = exc.get(STATE_KEY) if isinstance(exc, dict) else None
        if isinstance(rebuilt, TimberError) and isinstance(state, dict):
            rebuilt.__dict__.update(state)
        return rebuilt

    Backend.prepare_exception = prepare_exception
    Backend.exception_to_python = exception_to_python
    Backend._timber_errors = True
