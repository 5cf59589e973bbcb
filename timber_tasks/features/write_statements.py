"""What a write statement carries and touches: its rows prepared, its primary keys, the tables raw SQL names.

Used by the after-write step (writes.py) for statements through a session and on a connection.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import inspect as sa_inspect
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.sql.elements import BindParameter, ClauseElement, TextClause

from timber_tasks.errors import ValidationError

RowPreparer = Callable[[type[Any], list[dict[str, Any]]], None]

# The tables raw SQL writes (CTEs included); a false match only invalidates more than needed.
_TEXT_WRITE = re.compile(r"\b(?:INSERT\s+(?:OR\s+\w+\s+)?INTO|UPDATE|DELETE\s+FROM)\s+(?:\"?\w+\"?\.)?\"?(\w+)\"?",
                         re.IGNORECASE)


def prepare(model: type[Any], statement: Any, rows: list[dict[str, Any]], prepare_rows: RowPreparer,
            run: bool = True) -> tuple[Any, list[dict[str, Any]]]:
    """Run `prepare_rows` on parameter rows and on the literal values a statement carries itself."""
    if not run:
        return statement, rows
    if rows:
        rows = [dict(r) for r in rows]
        prepare_rows(model, rows)
    multi = getattr(statement, "_multi_values", None)
    if multi:
        given = [literal_values(model, row) for group in multi for row in group]
        after = [dict(row) for row in given]
        prepare_rows(model, after)
        if after != given:
            raise ValidationError(model.timber_spec.name, None, "a multi-row insert().values([...]) cannot "
                                  "carry searchable hashes: pass the rows as parameters: "
                                  "session.execute(insert(Model), rows)")
        return statement, rows
    values = getattr(statement, "_values", None)
    if values:
        given_one = literal_values(model, values)
        after_one = dict(given_one)
        prepare_rows(model, [after_one])
        changes = {k: v for k, v in after_one.items() if k not in given_one or given_one[k] is not v}
        if changes:
            statement = statement.values(**changes)
    return statement, rows


def literal_values(model: type[Any], values: Any, strict: bool = True) -> dict[str, Any]:
    """{column key: value} of a statement's own values; strict: an SQL expression on a searchable field is refused."""
    from timber_tasks.features.encryption import searchable_fields

    literal: dict[str, Any] = {}
    for key, value in (values.items() if isinstance(values, Mapping) else []):
        name = str(getattr(key, "key", key))
        if isinstance(value, BindParameter) and value.callable is None:
            literal[name] = value.value
        elif not isinstance(value, ClauseElement):
            literal[name] = value
        elif strict and name in searchable_fields(model):
            raise ValidationError(model.timber_spec.name, name, "is searchable: set it to a value, not an SQL "
                                  "expression (its hash could not be computed)")
    return literal


def record(note: Callable[..., None], model: type[Any], statement: Any, rows: list[dict[str, Any]],
            is_delete: bool) -> None:
    """Note the primary keys a statement writes, or the whole model when they are not known."""
    keys = [c.key for c in sa_inspect(model).primary_key]
    if not rows and isinstance(statement, UpdateBase) and getattr(statement, "_values", None):
        rows = [literal_values(model, statement._values, strict=False)]  # type: ignore[attr-defined]
    has_where = bool(getattr(statement, "_where_criteria", ()))
    is_insert = getattr(statement, "is_insert", False)
    if rows and (is_insert or not has_where):
        pks = [primary_key(r, keys) for r in rows]
        if all(pk is not None for pk in pks):
            note(**{"deleted" if is_delete else "written": pks})
            return
    note(whole_model=True)


def text_targets(statement: TextClause, model_of_name: Mapping[str, Any]) -> list[type[Any]]:
    """The models whose tables a raw INSERT/UPDATE/DELETE names."""
    found = (model_of_name.get(name.lower()) for name in _TEXT_WRITE.findall(statement.text))
    return list(dict.fromkeys(model for model in found if model is not None))


def primary_key(row: Mapping[str, Any], keys: list[str]) -> Any:
    values = tuple(row.get(k) for k in keys)
    if None in values:
        return None
    return values[0] if len(values) == 1 else values
