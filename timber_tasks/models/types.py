"""YAML type strings to SQLAlchemy types: one ordered parser that names what it cannot match."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    Integer,
    LargeBinary,
    Numeric,
    String,
    Text,
    Time,
    Uuid,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.types import TypeEngine

TypeFactory = Callable[..., TypeEngine[Any]]


def _jsonb() -> TypeEngine[Any]:
    # JSONB where the dialect has it, plain JSON elsewhere.
    return JSON().with_variant(postgresql.JSONB(), "postgresql")


def _uuid() -> TypeEngine[Any]:
    return Uuid(as_uuid=False)  # strings in and out: JSON task payloads stay plain


BUILTIN_TYPES: dict[str, TypeFactory] = {
    "String": String,
    "Text": Text,
    "Integer": Integer,
    "BigInteger": BigInteger,
    "Float": Float,
    "Numeric": lambda precision=None, scale=None: Numeric(precision, scale, asdecimal=True),
    "Boolean": Boolean,
    "DateTime": DateTime,
    "Date": Date,
    "Time": Time,
    "JSON": JSON,
    "JSONB": _jsonb,
    "UUID": _uuid,
    "LargeBinary": LargeBinary,
}

_custom_types: dict[str, TypeEngine[Any] | TypeFactory] = {}

_TOKEN = re.compile(r"\s*(?:(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<int>\d+)|(?P<punct>[(),]))")


class TypeParseError(ValueError):
    """Raised when a YAML type string cannot be turned into an SQLAlchemy type."""


def register_type(name: str, type_: TypeEngine[Any] | TypeFactory) -> None:
    """Register a custom YAML type name, e.g. register_type("MoneyAmount", Numeric(12, 2))."""
    if name in BUILTIN_TYPES or name == "ARRAY":
        raise ValueError(f"type name {name!r} is built in and cannot be redefined")
    _custom_types[name] = type_


def unregister_type(name: str) -> None:
    _custom_types.pop(name, None)


def known_type_names() -> list[str]:
    return sorted([*BUILTIN_TYPES, "ARRAY", *_custom_types])


def parse_type(text: str, dialect: str | None = None) -> TypeEngine[Any]:
    """Parse 'String(36)', 'Numeric(10, 2)', 'ARRAY(String(20))' or a registered name."""
    tokens = _tokenize(text)
    type_, rest = _parse(tokens, text, dialect)
    if rest:
        raise TypeParseError(f"unexpected {''.join(rest)!r} after the type in {text!r}")
    return type_


def _tokenize(text: str) -> list[str]:
    tokens, pos = [], 0
    stripped = text.rstrip()
    while pos < len(stripped):
        match = _TOKEN.match(stripped, pos)
        if not match:
            raise TypeParseError(f"cannot read type {text!r} at {stripped[pos:]!r}")
        tokens.append(match.group(match.lastgroup or "name"))
        pos = match.end()
    return tokens


def _parse(tokens: list[str], text: str, dialect: str | None) -> tuple[TypeEngine[Any], list[str]]:
    if not tokens or not re.match(r"[A-Za-z_]", tokens[0]):
        raise TypeParseError(f"type {text!r} must start with a type name")
    name, rest = tokens[0], tokens[1:]
    args: list[Any] = []
    if rest and rest[0] == "(":
        rest = rest[1:]
        while rest and rest[0] != ")":
            if rest[0].isdigit():
                args.append(int(rest[0]))
                rest = rest[1:]
            else:
                inner, rest = _parse(rest, text, dialect)
                args.append(inner)
            if rest and rest[0] == ",":
                rest = rest[1:]
            elif rest and rest[0] != ")":
                raise TypeParseError(f"expected ',' or ')' in type {text!r}")
        if not rest:
            raise TypeParseError(f"missing ')' in type {text!r}")
        rest = rest[1:]
    return _build(name, args, text, dialect), rest


def _build(name: str, args: list[Any], text: str, dialect: str | None) -> TypeEngine[Any]:
    if name == "ARRAY":
        if dialect is not None and dialect != "postgresql":
            raise TypeParseError(
                f"type {text!r}: ARRAY needs PostgreSQL, but the database is {dialect}; "
                "use JSON for lists on other databases"
            )
        if len(args) != 1 or not isinstance(args[0], TypeEngine):
            raise TypeParseError(f"type {text!r}: ARRAY takes one item type, e.g. ARRAY(String(20))")
        return postgresql.ARRAY(args[0])
    factory = BUILTIN_TYPES.get(name) or _custom_types.get(name)
    if factory is None:
        raise TypeParseError(
            f"unknown type {name!r} in {text!r}; known types: {', '.join(known_type_names())} "
            "(register others with timber_tasks.register_type)"
        )
    if isinstance(factory, TypeEngine):
        if args:
            raise TypeParseError(f"registered type {name!r} takes no arguments, got {text!r}")
        return factory
    if any(isinstance(a, TypeEngine) for a in args):
        raise TypeParseError(f"type {text!r}: only ARRAY takes a type as its argument")
    try:
        return factory(*args)
    except TypeError as exc:
        raise TypeParseError(f"type {text!r}: wrong arguments for {name} ({exc})") from exc
