"""Create, update, upsert and delete records of any YAML model, once per idempotency key.

The idempotency record is written in the same transaction as the effect; its primary key
makes a second run of the same key fail at commit, which rolls the duplicate effect back,
and the first run's stored result is returned instead.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import delete, insert, inspect, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from timber_tasks.errors import TimberError, ValidationError
from timber_tasks.features.writes import PREPARED, prepare_rows
from timber_tasks.jobs import outbox
from timber_tasks.jobs.tables import JobRecord
from timber_tasks.models.defaults import utcnow
from timber_tasks.models.records import jsonable_value, to_jsonable, validate_record

OPERATIONS = ("create", "update", "upsert", "delete")


class RecordNotFoundError(TimberError, LookupError):
    """Raised when an update names a record that does not exist."""

    def __init__(self, model: str, key: Mapping[str, Any]) -> None:
        self.model = model
        self.key = dict(key)
        super().__init__(f"{model}: no record with {self.key}")


def persist(
    timber: Any,  # a runtime.Timber (jobs sit below the runtime that builds them)
    model_name: str,
    operation: str,
    data: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    *,
    idempotency_key: str,
    task_name: str = "timber.persist",
    outbox_task_id: str | None = None,
) -> dict[str, Any]:
    """Apply one write job; a second call with the same key changes nothing and returns the first result."""
    if operation not in OPERATIONS:
        raise ValidationError(model_name, None, f"unknown operation {operation!r}; use one of {', '.join(OPERATIONS)}")
    model = timber.registry.get(model_name)
    batch = isinstance(data, list | tuple)
    records = list(data) if batch else [data]
    if not records:
        raise ValidationError(model_name, None, "a batch job needs at least one record")
    rows = _validated(model, operation, records)
    try:
        with timber.db.session_scope() as session:
            result = OPERATION_FUNCTIONS[operation](session, model, rows, batch)
            result.update(model=model_name, operation=operation)
            # A Core insert, not an ORM add: same transaction, without a second unit-of-work flush.
            session.execute(insert(JobRecord), [{"idempotency_key": idempotency_key, "task_name": task_name,
                                                 "result": result, "created_at": utcnow()}])
            if outbox_task_id:
                outbox.complete(session, outbox_task_id)
    except IntegrityError as exc:
        first = recorded_result(timber, idempotency_key)
        if first is not None:
            if outbox_task_id:
                with timber.db.session_scope() as session:
                    outbox.complete(session, outbox_task_id)
            return first
        raise ValidationError(model_name, None, f"conflicts with the stored data: {exc.orig}") from None
    return result


def recorded_result(timber: Any, idempotency_key: str) -> dict[str, Any] | None:
    with timber.db.session_scope() as session:
        record = session.get(JobRecord, idempotency_key)
        return dict(record.result) if record is not None else None


def _validated(model: type[Any], operation: str, records: list[Any]) -> list[dict[str, Any]]:
    keys = [c.key for c in inspect(model).primary_key]
    rows = []
    for record in records:
        row = validate_record(model, record, partial=operation in ("update", "delete"))
        if operation != "create":
            missing = [k for k in keys if row.get(k) is None]
            if missing:
                raise ValidationError(model.__name__, missing[0], f"{operation} needs the primary key")
        if operation == "delete":
            row = {k: row[k] for k in keys}
        rows.append(row)
    return rows


def _create(session: Session, model: type[Any], rows: list[dict[str, Any]], batch: bool) -> dict[str, Any]:
    if not batch:
        obj = model(**rows[0])
        session.add(obj)
        session.flush()
        return {"count": 1, "record": _public(obj)}
    session.execute(insert(model), rows)  # ORM bulk insert: one executemany
    return {"count": len(rows)}


def _update(session: Session, model: type[Any], rows: list[dict[str, Any]], batch: bool) -> dict[str, Any]:
    keys = [c.key for c in inspect(model).primary_key]
    if not batch:
        key = {k: rows[0][k] for k in keys}
        obj = session.get(model, tuple(key.values()) if len(keys) > 1 else key[keys[0]])
        if obj is None:
            raise RecordNotFoundError(model.__name__, key)
        for field, value in rows[0].items():
            setattr(obj, field, value)
        session.flush()
        return {"count": 1, "record": _public(obj)}
    for group in _by_fields(rows).values():
        session.execute(update(model), group)  # ORM bulk update by primary key
    return {"count": len(rows)}


def _upsert(session: Session, model: type[Any], rows: list[dict[str, Any]], batch: bool) -> dict[str, Any]:
    table = model.__table__
    keys = [c.name for c in table.primary_key.columns]
    dialect_insert: Callable[..., Any] = (
        postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    )
    # ON CONFLICT does not fire Python-side onupdate: fill those columns here.
    stamped = {c.name: c.onupdate.arg for c in table.columns if c.onupdate is not None}
    for group in _by_fields(rows).values():
        for row in group:
            row.update({name: fn(None) for name, fn in stamped.items() if name not in row})
        prepare_rows(model, group)  # before the SET list is built: it must carry the new hashes too
        stmt = dialect_insert(table)
        fields = [f for f in group[0] if f not in keys]
        stmt = (stmt.on_conflict_do_update(index_elements=keys, set_={f: stmt.excluded[f] for f in fields})
                if fields else stmt.on_conflict_do_nothing(index_elements=keys))
        session.execute(stmt, group, execution_options={PREPARED: True})  # prepared above: once is enough
    if batch:
        return {"count": len(rows)}
    key = {k: rows[0][k] for k in keys}
    session.expire_all()
    obj = session.get(model, tuple(key.values()) if len(keys) > 1 else key[keys[0]])
    return {"count": 1, "record": _public(obj)}


def _delete(session: Session, model: type[Any], rows: list[dict[str, Any]], batch: bool) -> dict[str, Any]:
    keys = [c.key for c in inspect(model).primary_key]
    deleted = 0
    if len(keys) == 1 and batch:
        column = getattr(model, keys[0])
        deleted = session.execute(delete(model).where(column.in_([r[keys[0]] for r in rows]))).rowcount  # type: ignore[attr-defined]
        return {"count": deleted}
    for row in rows:
        obj = session.get(model, tuple(row[k] for k in keys) if len(keys) > 1 else row[keys[0]])
        if obj is not None:  # deleting what is gone already is done, not an error
            session.delete(obj)
            deleted += 1
    session.flush()
    result: dict[str, Any] = {"count": deleted}
    if not batch:
        result["key"] = {k: jsonable_value(v) for k, v in rows[0].items()}
    return result


def _public(obj: Any) -> dict[str, Any]:
    """A written row for the job's result: results and job records never hold encrypted fields."""
    record = to_jsonable(obj)
    for klass in type(obj).__mro__:
        resolved = klass.__dict__.get("timber_spec")
        enc = resolved.spec.encryption if resolved is not None else None
        if enc is not None and enc.enabled:
            for field in enc.fields:
                record.pop(field, None)
    return record


def _by_fields(rows: list[dict[str, Any]]) -> dict[tuple[str, ...], list[dict[str, Any]]]:
    """executemany needs one statement shape: group the rows by the fields they set."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[tuple(sorted(row))].append(row)
    return groups


OPERATION_FUNCTIONS: dict[str, Callable[[Session, type[Any], list[dict[str, Any]], bool], dict[str, Any]]] = {
    "create": _create,
    "update": _update,
    "upsert": _upsert,
    "delete": _delete,
}
