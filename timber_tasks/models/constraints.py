"""A database's refusal of a write (IntegrityError) as one ValidationError naming the model and column.

The same mistake gives the same error on every path (jobs, services, an app's own session)
and on SQLite and PostgreSQL: an unknown foreign key, a duplicate unique value, a broken
CHECK (with its allowed values) or a missing required value. SQLite says less than
PostgreSQL (a failed foreign key names no column), so the statement's own parameters are
checked against the referenced tables to find the column.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sqlalchemy import CheckConstraint, Engine, Table, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from timber_tasks.errors import ValidationError

PG_KEY = re.compile(r"Key \((?P<cols>[^)]*)\)=\((?P<vals>.*)\)")
SQLITE_COLUMNS = re.compile(r"constraint failed: (?P<cols>[\w.]+(?:, [\w.]+)*)")
IN_LIST = re.compile(r"^\s*\"?(?P<col>\w+)\"?\s+IN\s*\((?P<values>.*)\)\s*$", re.IGNORECASE | re.DOTALL)


def allowed_values(check: str) -> list[str] | None:
    """The literals of a `column IN ('a', 'b')` check, else None."""
    match = IN_LIST.match(check)
    if not match:
        return None
    return [v.strip().strip("'") for v in match.group("values").split(",")]


def _placeholder_columns(statement: str) -> list[str]:
    """Column names in the order of positional parameters (SQLite's `?`): INSERT column list or SET a=?."""
    insert = re.search(r"INSERT INTO\s+\S+\s*\(([^)]*)\)", statement, re.IGNORECASE)
    if insert:
        return [c.strip().strip('"') for c in insert.group(1).split(",")]
    return [m.group(1) for m in re.finditer(r"\"?(\w+)\"?\s*=\s*\?", statement)]


def _statement_rows(exc: IntegrityError) -> list[Mapping[str, Any]]:
    """The refused statement's parameters as column -> value rows (one, or one per executemany row)."""
    params = exc.params
    batch = params if isinstance(params, list) and params and isinstance(params[0], Mapping | tuple | list) \
        else [params]
    names = _placeholder_columns(exc.statement or "")
    rows: list[Mapping[str, Any]] = []
    for row in batch:
        if isinstance(row, Mapping):
            rows.append(row)
        elif isinstance(row, tuple | list) and names:
            rows.append(dict(zip(names, row, strict=False)))
    return rows


def _table_in(message: str, tables: Mapping[str, Any], statement: str) -> str | None:
    for name in sorted(tables, key=len, reverse=True):
        if f'"{name}"' in message or f"{name}." in message:
            return name
    match = re.search(r"(?:INSERT INTO|UPDATE|DELETE FROM)\s+\"?(\w+)\"?", statement or "")
    return match.group(1) if match and match.group(1) in tables else None


def _missing_reference(table: Table, rows: Iterable[Mapping[str, Any]], engine: Engine) -> tuple[str, Any, str] | None:
    """(column, value, referenced table) of the first foreign key value with no row behind it."""
    rows = list(rows)
    try:
        with engine.connect() as conn:
            for fk in table.foreign_keys:
                column, target = fk.parent, fk.column
                for row in rows:
                    value = row.get(column.key, row.get(column.name))
                    if value is None:
                        continue
                    if conn.execute(select(target).where(target == value).limit(1)).first() is None:
                        return column.name, value, target.table.name
    except SQLAlchemyError:
        return None
    return None


def _check_of(table: Table, name: str | None, message: str) -> tuple[str | None, str] | None:
    for constraint in table.constraints:
        if isinstance(constraint, CheckConstraint) and constraint.name and (
            constraint.name == name or str(constraint.name) in message
        ):
            column = str(constraint.name).removeprefix(f"ck_{table.name}_")
            return (column if column in table.c else None), str(constraint.sqltext)
    return None


def explain(exc: IntegrityError, models: Mapping[str, str], tables: Mapping[str, Table],
            engine: Engine) -> ValidationError | None:
    """The ValidationError for a refused write to one of the tables (table name -> model name), or None."""
    orig = exc.orig
    message = str(orig)
    diag = getattr(orig, "diag", None)
    code = getattr(orig, "pgcode", None)
    table_name = getattr(diag, "table_name", None) or _table_in(message, tables, exc.statement or "")
    if not isinstance(table_name, str) or table_name not in tables:
        return None
    table, model = tables[table_name], models[table_name]
    key = PG_KEY.search(getattr(diag, "message_detail", None) or message)
    if code == "23503" or "FOREIGN KEY constraint failed" in message:
        if key and "still referenced" in message + str(getattr(diag, "message_detail", "")):
            return ValidationError(model, key.group("cols"), f"{key.group('vals')!s} is still referenced by rows "
                                   "of another table; delete or change those first")
        found = _missing_reference(table, _statement_rows(exc), engine)
        if found is not None:
            column, value, target = found
            return ValidationError(model, column, f"{value!r} is not the id of a row in {target}")
        return ValidationError(model, key.group("cols") if key else None,
                               "refers to a row that does not exist, or is still referenced by rows of another table")
    if code == "23505" or "UNIQUE constraint failed" in message:
        if key:
            columns, values = key.group("cols"), key.group("vals")
        else:
            match = SQLITE_COLUMNS.search(message)
            columns = ", ".join(c.split(".")[-1] for c in match.group("cols").split(", ")) if match else ""
            values = ", ".join(str(r.get(c)) for r in _statement_rows(exc)[:1] for c in columns.split(", "))
        return ValidationError(model, columns or None, f"{values!r} is taken: another row already has it")
    if code == "23514" or "CHECK constraint failed" in message:
        found_check = _check_of(table, getattr(diag, "constraint_name", None), message)
        check_column, check = found_check if found_check else (None, message)
        values = allowed_values(check)
        hint = f"allowed values: {', '.join(values)}" if values else f"must satisfy {check}"
        return ValidationError(model, check_column, f"breaks the check constraint; {hint}")
    if code == "23502" or "NOT NULL constraint failed" in message:
        null_column: str | None = getattr(diag, "column_name", None)
        if null_column is None:
            match = SQLITE_COLUMNS.search(message)
            null_column = match.group("cols").split(".")[-1] if match else None
        return ValidationError(model, null_column, "may not be null")
    return None


def explainer(registry: Any, engine_of: Callable[[], Engine]) -> Callable[[IntegrityError], ValidationError | None]:
    """explain() bound to a registry's tables, for DatabaseManager.explain_integrity."""
    models: dict[str, str] = {}
    tables: dict[str, Table] = {}
    for model in registry:
        table = getattr(model, "__table__", None)
        if table is not None and table.name not in models:
            models[table.name], tables[table.name] = model.timber_spec.name, table
    return lambda exc: explain(exc, models, tables, engine_of())
