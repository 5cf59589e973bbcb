"""The functions a YAML `default:` or `onupdate:` may name, in one place for the loader and factory."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any


def utcnow() -> datetime:
    """Naive UTC: DateTime columns carry no zone, and both dialects store it unchanged."""
    return datetime.now(UTC).replace(tzinfo=None)


def new_uuid() -> str:
    return str(uuid.uuid4())


DEFAULT_FUNCTIONS: dict[str, Callable[[], Any]] = {"uuid4": new_uuid, "utcnow": utcnow, "now": utcnow}
