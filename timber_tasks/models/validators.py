"""Column validators from YAML (email, range, regex, length, custom), enforced on every write."""

from __future__ import annotations

import re
import weakref
from collections.abc import Callable
from typing import Any

from timber_tasks.models.spec import ValidatorSpec

# A pragmatic address check: one @, no spaces, a dot in the domain. Deliverability is not ours.
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

# A validator returns None when the value is fine, else the reason it is not.
Check = Callable[[Any], str | None]
CustomValidator = Callable[..., bool]

_custom: dict[str, CustomValidator] = {}

# Handled as a column constraint by the factory, not as a check on the value.
CONSTRAINT_VALIDATORS = frozenset({"unique"})


def register_validator(name: str) -> Callable[[CustomValidator], CustomValidator]:
    """Decorator: register fn(value, **options) -> bool as YAML validator `name`."""

    def decorate(fn: CustomValidator) -> CustomValidator:
        if name in BUILTIN or name in CONSTRAINT_VALIDATORS:
            raise ValueError(f"validator name {name!r} is built in and cannot be redefined")
        _custom[name] = fn
        return fn

    return decorate


def unregister_validator(name: str) -> None:
    _custom.pop(name, None)


def known_validators() -> list[str]:
    return sorted([*BUILTIN, *CONSTRAINT_VALIDATORS, *_custom])


def _email(spec: ValidatorSpec) -> Check:
    return lambda v: None if isinstance(v, str) and EMAIL.match(v) else f"{v!r} is not an email address"


def _range(spec: ValidatorSpec) -> Check:
    def check(value: Any) -> str | None:
        if spec.min is not None and value < spec.min:
            return f"{value!r} is below the minimum {spec.min:g}"
        if spec.max is not None and value > spec.max:
            return f"{value!r} is above the maximum {spec.max:g}"
        return None

    return check


def _regex(spec: ValidatorSpec) -> Check:
    pattern = re.compile(spec.pattern or "")
    return lambda v: None if isinstance(v, str) and pattern.search(v) else (
        f"{v!r} does not match the pattern {spec.pattern!r}"
    )


def _length(spec: ValidatorSpec) -> Check:
    def check(value: Any) -> str | None:
        n = len(value)
        if spec.min is not None and n < spec.min:
            return f"length {n} is below the minimum {spec.min:g}"
        if spec.max is not None and n > spec.max:
            return f"length {n} is above the maximum {spec.max:g}"
        return None

    return check


BUILTIN: dict[str, Callable[[ValidatorSpec], Check]] = {
    "email": _email,
    "range": _range,
    "regex": _regex,
    "length": _length,
}


def build_check(spec: ValidatorSpec) -> Check:
    """Turn one YAML validator into a check; unknown names raise ValueError listing the known."""
    if spec.type in BUILTIN:
        return BUILTIN[spec.type](spec)
    if spec.type in _custom:
        fn = _custom[spec.type]
        return lambda v: None if fn(v, **spec.options) else f"{v!r} failed validator {spec.type!r}"
    raise ValueError(
        f"unknown validator {spec.type!r}; known: {', '.join(known_validators())} "
        "(register others with timber_tasks.register_validator)"
    )


def with_message(spec: ValidatorSpec, check: Check) -> Check:
    """Use the YAML's own message, when it gives one, instead of the built-in reason."""
    if not spec.message:
        return check
    return lambda v: spec.message if check(v) else None


_checks_by_model: weakref.WeakKeyDictionary[type[Any], dict[str, list[Check]]] = weakref.WeakKeyDictionary()


def column_checks(model: type[Any]) -> dict[str, list[Check]]:
    """The value checks of a model's columns, inherited columns included (built once per class)."""
    checks = _checks_by_model.get(model)
    if checks is None:
        checks = {}
        for klass in reversed(model.__mro__):
            resolved = klass.__dict__.get("timber_spec")
            for col in resolved.columns if resolved is not None else ():
                found = [with_message(v, build_check(v)) for v in col.validators
                         if v.type not in CONSTRAINT_VALIDATORS]
                if found:
                    checks[col.name] = found
        _checks_by_model[model] = checks
    return checks


def row_problem(model: type[Any], row: dict[str, Any]) -> tuple[str, str] | None:
    """The first (field, reason) a row's values fail, or None; an encrypted field's value is never quoted."""
    secret = encrypted_fields(model)
    for name, checks in column_checks(model).items():
        value = row.get(name)
        if value is None:
            continue
        for check in checks:
            problem = check(value)
            if problem:
                return name, redact(problem, value) if name in secret else problem
    return None


SECRET = "<encrypted value>"  # what an error message shows instead of an encrypted field's value


_encrypted_by_model: weakref.WeakKeyDictionary[type[Any], frozenset[str]] = weakref.WeakKeyDictionary()


def encrypted_fields(model: type[Any]) -> frozenset[str]:
    """The fields a model (or a parent it inherits from) encrypts, read from the YAML (once per class)."""
    found = _encrypted_by_model.get(model)
    if found is None:
        fields: set[str] = set()
        for klass in model.__mro__:
            resolved = klass.__dict__.get("timber_spec")
            enc = resolved.spec.encryption if resolved is not None else None
            if enc is not None and enc.enabled:
                fields.update(enc.fields)
        found = _encrypted_by_model[model] = frozenset(fields)
    return found


def redact(message: str, value: Any) -> str:
    """The message without the value in it: errors end up in dead letters, outbox rows and logs."""
    for shown in {repr(value), str(value), json_text(value)}:
        if shown:
            message = message.replace(shown, SECRET)
    return message


def json_text(value: Any) -> str:
    import json

    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return ""
