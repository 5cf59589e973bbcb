"""Job payloads sealed with the key ring, so no store a job passes through holds plaintext.

A job's arguments may carry values of encrypted fields. The `timber-json` kombu
serializer is JSON, then Fernet under the newest key: the broker, Flower and the result
backend only ever see tokens. The same seal wraps the outbox's and the dead letters'
arguments (`SealedJSON` column type). Without encryption keys no model encrypts a field,
so there is nothing to hide and payloads stay plain JSON (marked as such).
"""

from __future__ import annotations

import json
import os
from typing import Any

from cryptography.fernet import InvalidToken
from kombu.exceptions import DecodeError
from kombu.serialization import register
from kombu.utils.json import dumps as kombu_dumps
from kombu.utils.json import loads as kombu_loads
from sqlalchemy.types import JSON, TypeDecorator

from timber_tasks.features.encryption import KeyRing

SERIALIZER = "timber-json"
CONTENT_TYPE = "application/x-timber-json"
SEALED = "F:"  # a Fernet token of the JSON follows
PLAIN = "P:"  # plain JSON follows (no keys configured)
HIDDEN = "<sealed>"  # what argsrepr/kwargsrepr say instead of the arguments

_ring: KeyRing | None = None
_ring_source: str | None = None


def use_keyring(keyring: KeyRing | None) -> None:
    """Seal with this ring in this process (initialize_timber calls it); None: from the environment."""
    global _ring, _ring_source
    _ring, _ring_source = keyring, "given" if keyring is not None else None


def keyring() -> KeyRing | None:
    """The ring this process seals with: the Timber's, else TIMBER_ENCRYPTION_KEYS."""
    global _ring, _ring_source
    if _ring_source == "given":
        return _ring
    env = os.environ.get("TIMBER_ENCRYPTION_KEYS", "")
    if env != _ring_source:
        keys = [k.strip() for k in env.split(",") if k.strip()]
        _ring, _ring_source = (KeyRing(keys) if keys else None), env
    return _ring


def seal(text: str) -> str:
    ring = keyring()
    return SEALED + ring.encrypt(text.encode("utf-8")) if ring is not None else PLAIN + text


def unseal(sealed: str) -> str:
    """The JSON text inside; a token no key opens raises kombu's DecodeError naming the cause."""
    if sealed.startswith(PLAIN):
        return sealed[len(PLAIN):]
    if not sealed.startswith(SEALED):
        raise DecodeError(f"not a {SERIALIZER} payload (it starts with {sealed[:8]!r})")
    ring = keyring()
    if ring is None:
        raise DecodeError(f"a sealed {SERIALIZER} payload arrived, but no key is configured: "
                          "set TIMBER_ENCRYPTION_KEYS as on the sender")
    try:
        return ring.decrypt(sealed[len(SEALED):]).decode("utf-8")
    except (InvalidToken, ValueError, UnicodeError):
        raise DecodeError(f"a sealed {SERIALIZER} payload that no configured key opens "
                          "(sent under a key since removed from TIMBER_ENCRYPTION_KEYS, or corrupted)") from None


def _encode(obj: Any) -> str:
    return seal(kombu_dumps(obj))


# delay() refuses payloads nested past 32 levels (payloads.MAX_DEPTH) and Celery's envelope adds a few. A raw
# message nested far deeper decodes, but the worker cannot pickle it to its pool: it froze a pool slot for good.
MAX_MESSAGE_DEPTH = 64


def _decode(data: str | bytes) -> Any:
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    value = kombu_loads(unseal(text))
    if _deeper_than(value, MAX_MESSAGE_DEPTH):
        raise DecodeError(f"a {SERIALIZER} payload nested deeper than {MAX_MESSAGE_DEPTH} levels")
    return value


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether lists and objects nest past `limit` levels (iterative: a deep value must not recurse here)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return False


def reseal_stored(db: Any, metadata: Any) -> int:
    """Re-seal stored payloads (outbox, dead letters, ...) under the newest key, so older keys can go.

    Returns how many rows changed; a payload no configured key opens is left as it is.
    """
    from sqlalchemy import Text, select, type_coerce, update

    ring = keyring()
    if ring is None:
        return 0
    changed = 0
    for table in metadata.tables.values():
        columns = [c for c in table.columns if isinstance(c.type, SealedJSON)]
        if not columns:
            continue
        keys = list(table.primary_key.columns)
        with db.session_scope() as session:
            rows = session.execute(select(*keys, *(type_coerce(c, Text()).label(c.name) for c in columns))).all()
            for row in rows:
                fresh = {c.name: _resealed(ring, getattr(row, c.name)) for c in columns}
                fresh = {name: token for name, token in fresh.items() if token is not None}
                if fresh:  # the column is JSON: the token goes in as a JSON string
                    session.execute(update(table).where(*(k == row[i] for i, k in enumerate(keys)))
                                    .values({table.c[n]: type_coerce(json.dumps(t), Text()) for n, t in fresh.items()}))
                    changed += 1
    return changed


def _resealed(ring: KeyRing, raw: Any) -> str | None:
    """The payload sealed under the newest key, or None when it already is (or no key opens it)."""
    if isinstance(raw, str) and raw.startswith('"'):  # SQLite hands back the JSON text; psycopg2 parses it
        raw = json.loads(raw)
    if not isinstance(raw, str) or not raw.startswith(SEALED) or ring.is_current(raw[len(SEALED):]):
        return None
    try:
        return SEALED + ring.encrypt(ring.decrypt(raw[len(SEALED):]))
    except (InvalidToken, ValueError):
        return None


def register_serializer() -> None:
    """Register `timber-json` with kombu (idempotent)."""
    register(SERIALIZER, _encode, _decode, content_type=CONTENT_TYPE, content_encoding="utf-8")


def hide_argsrepr(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """argsrepr/kwargsrepr go to the broker and Flower in clear: say only that the arguments are sealed."""
    if headers is not None and keyring() is not None:
        headers["argsrepr"] = headers["kwargsrepr"] = HIDDEN


class SealedJSON(TypeDecorator[Any]):
    """A JSON column whose value is stored sealed (outbox and dead-letter arguments)."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        return None if value is None else seal(json.dumps(value))

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        if isinstance(value, str) and value[:2] in (SEALED, PLAIN):
            return json.loads(unseal(value))
        return value  # a row written before sealing
