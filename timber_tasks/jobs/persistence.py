"""Create, update, upsert and delete records of any YAML model, once per idempotency key.

The idempotency record is written in the same transaction as the effect; its primary key
makes a second run of the same key fail at commit, which rolls the duplicate effect back,
and the first run's stored result is returned instead.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import delete, insert, inspect, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from timber_tasks.errors import ValidationError
from timber_tasks.features import isolation
from timber_tasks.features.writes import PREPARED, prepare_rows
from timber_tasks.jobs import outbox, payloads
from timber_tasks.jobs.tables import JobRecord
from timber_tasks.models.defaults import utcnow
from timber_tasks.models.records import jsonable_value, to_jsonable, validate_record

OPERATIONS = ("create", "update", "upsert", "delete")


class RecordNotFoundError(ValidationError, LookupError):
    """Raised when an update names a record that does not exist (in a batch: ids is its index)."""

    def __init__(self, model: str, key: Mapping[str, Any], index: int | None = None) -> None:
        self.key = dict(key)
        super().__init__(model, None, f"no record with {self.key}" + (f" (record {index} of the batch)"
                                                                       if index is not None else ""), ids=index)
        self.field = next(iter(self.key)) if len(self.key) == 1 else None

    def __str__(self) -> str:
        return f"{self.model}: {self.message}"


def scoped_key(app: str, key: str) -> str:
    """An app's idempotency key in the one key column: `app:key`, or `app:sha256:<hash>` where that would not fit."""
    scoped = f"{app}:{key}"
    if len(scoped) <= payloads.MAX_KEY_LENGTH:
        return scoped
    return f"{app}:sha256:{hashlib.sha256(key.encode('utf-8', 'surrogatepass')).hexdigest()}"


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
    app = timber.app_name
    isolation.check_model(app, model)  # the job acts for the app that sent it, as its services do
    batch = isinstance(data, list | tuple)
    records = list(data) if batch else [data]
    if not records:
        raise ValidationError(model_name, None, "a batch job needs at least one record")
    rows = _validated(model, operation, records)
    _check_scopes(app, model, rows)
    if app != isolation.PLATFORM_APP:  # two apps may pick the same key: each has its own
        idempotency_key = scoped_key(app, idempotency_key)
    try:
        with timber.db.session_scope() as session:
            if operation != "create":
                _check_stored_scopes(timber, session, model, rows)
            result = OPERATION_FUNCTIONS[operation](session, model, rows, batch)
            result.update(model=model_name, operation=operation)
            # A Core insert, not an ORM add: same transaction, without a second unit-of-work flush.
            session.execute(insert(JobRecord), [{"idempotency_key": idempotency_key, "task_name": task_name,
                                                 "result": result, "created_at": utcnow()}])
            if outbox_task_id:
                outbox.complete(session, outbox_task_id)
    except (IntegrityError, ValidationError) as exc:
        if isinstance(exc, ValidationError) and not isinstance(exc.__cause__, IntegrityError):
            raise  # our own check, not the database's refusal
        first = recorded_result(timber, idempotency_key)
        if first is not None:
            if outbox_task_id:
                with timber.db.session_scope() as session:
                    outbox.complete(session, outbox_task_id)
            return first
        if isinstance(exc, ValidationError):  # the model and column the database refused
            raise exc from None
        raise ValidationError(model_name, None, f"conflicts with the stored data: {exc.orig}") from None
    return result


def recorded_result(timber: Any, idempotency_key: str) -> dict[str, Any] | None:
    with timber.db.session_scope() as session:
        record = session.get(JobRecord, idempotency_key)
        return dict(record.result) if record is not None else None


def _check_scopes(app: str, model: type[Any], rows: list[dict[str, Any]]) -> None:
    """Scope values the job writes (e.g. a session type) must be the app's own."""
    scope = model.timber_spec.spec.app_scope
    if scope is None:
        return
    for row in rows:
        if scope.column in row:
            isolation.check_scope(app, model, row[scope.column], ids=_key_of(model, row))


def _check_stored_scopes(timber: Any, session: Session, model: type[Any], rows: list[dict[str, Any]]) -> None:
    """Rows a job changes or deletes must be in the app's scope; hidden ones (RLS) are named, not 'missing'."""
    scope = model.timber_spec.spec.app_scope
    if scope is None or isolation.allowed_scope(timber.app_name, model) is None:
        return
    for row in rows:
        pk = _key_of(model, row)
        obj = session.get(model, pk)
        value = getattr(obj, scope.column) if obj is not None else isolation.hidden_scope_value(timber, model, pk)
        if value is not None:
            isolation.check_scope(timber.app_name, model, value, ids=pk)


def _key_of(model: type[Any], row: Mapping[str, Any]) -> Any:
    keys = [c.key for c in inspect(model).primary_key]
    values = tuple(row.get(k) for k in keys)
    return values if len(keys) > 1 else values[0]


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
    _require_rows(session, model, rows)  # a bulk update of a missing row would fail as StaleDataError
    for group in _by_fields(rows).values():
        session.execute(update(model), group)  # ORM bulk update by primary key
    return {"count": len(rows)}


def _require_rows(session: Session, model: type[Any], rows: list[dict[str, Any]]) -> None:
    keys = [c.key for c in inspect(model).primary_key]
    columns = [getattr(model, k) for k in keys]
    wanted = [tuple(row[k] for k in keys) for row in rows]
    found: set[tuple[Any, ...]] = set()
    for start in range(0, len(wanted), 500):
        chunk = wanted[start:start + 500]
        if len(keys) == 1:
            found.update((v,) for v in session.scalars(select(columns[0]).where(columns[0].in_([c[0] for c in chunk]))))
        else:
            found.update(tuple(r) for r in session.execute(select(*columns).where(tuple_(*columns).in_(chunk))))
    for index, key in enumerate(wanted):
        if key not in found:
            raise RecordNotFoundError(model.__name__, dict(zip(keys, key, strict=True)), index)


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
