"""Checks and converts plain (JSON) data for a model before it reaches the database.

Jobs and services receive JSON: dates arrive as ISO strings, decimals as strings or
numbers. This turns them into the column's Python type and reports the first problem
with the model and field named, so bad input fails before any write.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import inspect as sa_inspect
from sqlalchemy import types as satypes

from timber_tasks.errors import ValidationError
from timber_tasks.models import validators
from timber_tasks.models.json_values import text_problem, value_problem

# Integer ranges of the declared types: the same limits on SQLite (64-bit for all) and PostgreSQL.
INTEGER_RANGES = ((satypes.SmallInteger, 16), (satypes.BigInteger, 64), (satypes.Integer, 32))


def _to_datetime(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, str):
        parsed = dt.datetime.fromisoformat(value)
        if parsed.tzinfo is not None:  # stored as naive UTC
            parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
        return parsed
    raise TypeError("expected an ISO 8601 date-time string")


def _to_date(value: Any) -> dt.date:
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if isinstance(value, str):
        return dt.date.fromisoformat(value)
    raise TypeError("expected an ISO 8601 date string")


def _to_time(value: Any) -> dt.time:
    if isinstance(value, dt.time):
        return value
    if isinstance(value, str):
        return dt.time.fromisoformat(value)
    raise TypeError("expected an ISO 8601 time string")


def _to_decimal(value: Any) -> decimal.Decimal:
    if isinstance(value, bool):
        raise TypeError("expected a number")
    if isinstance(value, int | float | str | decimal.Decimal):
        result = decimal.Decimal(str(value))
        if not result.is_finite():
            raise TypeError("expected a finite number")
        return result
    raise TypeError("expected a number")


def _to_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise TypeError("expected an integer")
    return value


def _to_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("expected a number")
    result = float(value)
    if not math.isfinite(result):
        raise TypeError("expected a finite number")
    return result


def _to_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError("expected true or false")
    return value


def _to_str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string")
    problem = text_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _to_uuid_str(value: Any) -> str:
    return str(uuid.UUID(str(value)))


def _to_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    raise TypeError("expected bytes")


def _to_json(value: Any) -> Any:
    found = value_problem(value)
    if found is not None:
        path, problem = found
        raise ValueError(f"{'.'.join(map(str, path))} {problem}".strip())
    return value


# Order matters: subclasses before their bases (DateTime before Date is not a subclass, but
# BigInteger is an Integer and Text is a String).
CONVERTERS: tuple[tuple[type[satypes.TypeEngine[Any]], Any], ...] = (
    (satypes.DateTime, _to_datetime),
    (satypes.Date, _to_date),
    (satypes.Time, _to_time),
    (satypes.Boolean, _to_bool),
    (satypes.Integer, _to_int),
    (satypes.Float, _to_float),
    (satypes.Numeric, _to_decimal),
    (satypes.Uuid, _to_uuid_str),
    (satypes.String, _to_str),
    (satypes.LargeBinary, _to_bytes),
    (satypes.JSON, _to_json),
    (satypes.ARRAY, list),
)


def converter_for(type_: satypes.TypeEngine[Any]) -> Any:
    # An encrypted column converts like the plaintext type it stands for.
    impl = getattr(type_, "plain_type", None) or getattr(type_, "impl_instance", None) or type_
    for base, fn in CONVERTERS:
        if isinstance(impl, base):
            return fn
    return _to_json


def validate_record(model: type[Any], data: Mapping[str, Any], *, partial: bool = False) -> dict[str, Any]:
    """Return data converted to the model's column types, or raise ValidationError.

    partial=True checks only the given fields (an update); otherwise required columns
    without a default must be present (a create).
    """
    spec = model.timber_spec
    if not isinstance(data, Mapping):
        raise ValidationError(spec.name, None, f"expected an object of fields, got {type(data).__name__}")
    mapper = sa_inspect(model)
    columns = {c.key: c for c in mapper.column_attrs}
    computed = {c.name for c in spec.spec.computed}
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key not in columns:
            raise ValidationError(spec.name, key, f"unknown field; fields are {', '.join(sorted(columns))}")
        if key in computed:
            raise ValidationError(spec.name, key, "is computed by the database and cannot be written")
        column = columns[key].columns[0]
        if value is None:
            if not column.nullable:
                raise ValidationError(spec.name, key, "may not be null")
            out[key] = None
            continue
        try:
            value = converter_for(column.type)(value)
            _check_range(column.type, value)
        except (TypeError, ValueError, OverflowError, decimal.InvalidOperation) as exc:
            message = f"{_shown(value)}: {exc}"
            if key in validators.encrypted_fields(model):
                message = validators.redact(message, value)
            raise ValidationError(spec.name, key, message) from None
        length = getattr(column.type, "length", None)
        if isinstance(value, str) and length and len(value) > length:
            raise ValidationError(spec.name, key, f"is {len(value)} characters; the column holds {length}")
        out[key] = value
    _run_validators(spec, model, out)
    if not partial:
        for key, attr in columns.items():
            column = attr.columns[0]
            required = not column.nullable and column.default is None and column.server_default is None
            if required and key not in out and key not in computed and not _autoincrements(column):
                raise ValidationError(spec.name, key, "is required")
    return out


def _shown(value: Any) -> str:
    """A value for a message: short, and printable whatever it holds (deep nesting, surrogates)."""
    if isinstance(value, dict | list | tuple):
        return f"a {type(value).__name__}"
    return ascii(value)[:80]


def _check_range(type_: satypes.TypeEngine[Any], value: Any) -> None:
    """Numbers the declared column cannot hold fail here, not as a database overflow (or not at all on SQLite)."""
    impl = getattr(type_, "plain_type", None) or type_
    if isinstance(value, int) and not isinstance(value, bool):
        for base, bits in INTEGER_RANGES:
            if isinstance(impl, base):
                low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
                if not low <= value <= high:
                    raise OverflowError(f"out of range for {type(impl).__name__} ({low} to {high})")
                return
    if isinstance(value, decimal.Decimal) and isinstance(impl, satypes.Numeric) and impl.precision:
        scale = impl.scale or 0
        digits = value.adjusted() + 1 if value else 0
        if digits > impl.precision - scale:
            raise OverflowError(f"has {digits} digits before the decimal point; Numeric({impl.precision}, "
                                f"{scale}) holds {impl.precision - scale}")


def _autoincrements(column: Any) -> bool:
    return bool(column.primary_key and isinstance(column.type, satypes.Integer))


def _run_validators(spec: Any, model: type[Any], data: dict[str, Any]) -> None:
    problem = validators.row_problem(model, data)  # inherited columns keep their parent's validators
    if problem is not None:
        raise ValidationError(spec.name, problem[0], problem[1])


def to_jsonable(obj: Any) -> dict[str, Any]:
    """A mapped instance's column values as JSON-safe data (for job results and exports)."""
    mapper = sa_inspect(type(obj))
    return {attr.key: jsonable_value(getattr(obj, attr.key)) for attr in mapper.column_attrs}


def jsonable_value(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    return value
