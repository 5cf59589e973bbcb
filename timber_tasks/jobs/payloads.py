"""What a job's arguments may hold: JSON data that every store accepts, checked before anything is written.

A job's arguments go to the outbox (a JSON column), the broker (JSON) and the database
(PostgreSQL text refuses NUL; UTF-8 refuses lone surrogates). Data that some store would
refuse, or turn into something else (NaN, a datetime, a set), fails at delay() instead,
with the field named.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from timber_tasks.models.json_values import MAX_DEPTH, text_problem, value_problem

__all__ = ["MAX_DEPTH", "MAX_KEY_LENGTH", "key_problem", "record_fields", "value_problem"]

MAX_KEY_LENGTH = 200  # the idempotency record's key column


def record_fields(data: Any) -> Iterator[tuple[int | None, dict[str, Any]]]:
    """(index in the batch or None, record) for a job's one record or list of records."""
    if isinstance(data, list | tuple):
        yield from enumerate(data)
    else:
        yield None, data


def key_problem(key: Any) -> str | None:
    """What is wrong with an idempotency key, or None."""
    if key is None:
        return None
    if not isinstance(key, str) or not key.strip():
        return f"must be a non-empty string, not {type(key).__name__} {key!r:.40}"
    if len(key) > MAX_KEY_LENGTH:
        return f"is {len(key)} characters; at most {MAX_KEY_LENGTH}"
    return text_problem(key)
