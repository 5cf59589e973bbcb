"""The after-write step: one place every write path passes, before the write and after commit.

Before: `before_write` preparers (validators, searchable hashes) run on the rows of every
ORM bulk insert/update and every Core insert/upsert/update on a model's table, executed
through a Session. The ORM unit of work prepares through attribute events instead (they
fire as a value is set, on parent and child classes alike).

After commit: the writes of the transaction, grouped by model, go to every `on_commit`
hook once (cache invalidation; later re-embedding and GDPR bookkeeping). Writes are kept
per (nested) transaction, so a rolled-back savepoint drops only its own writes and a
rolled-back transaction runs no hook. Rows the database removes or nulls on its own
(ON DELETE CASCADE / SET NULL) are found through the foreign keys of the model graph.

Statements that bypass the session (`session.connection().execute(...)`, `engine.begin()`)
are seen at the connection: on a session's connection they join the session's writes; on a
bare connection they are kept there and handed to the hooks once its commit is done (at the
connection's next transaction or when it goes back to the pool). Raw SQL text that writes a
model's table is seen by the table it names and counts as a whole-model write; it is not
prepared (no validators, no hashes): write searchable fields through statements or the ORM.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.sql.elements import TextClause

from timber_tasks.errors import ValidationError
from timber_tasks.features import connection_writes
from timber_tasks.features import write_statements as statements
from timber_tasks.models.validators import row_problem

log = logging.getLogger("timber_tasks.writes")

PENDING = "timber_pending_writes"  # session.info key: [(transaction, model, pk, deleted, whole_model)]
SEEN = "timber_writes_seen"  # execution option: the caller declares this statement's writes itself
PREPARED = "timber_rows_prepared"  # execution option: the caller ran prepare_rows on the parameters already
IN_EXECUTE, FLUSHING = "timber_in_execute", "timber_flushing"  # session.info: a statement the session sees runs


@dataclass(frozen=True)
class ModelWrites:
    """What one committed transaction wrote to one model."""

    model: type[Any]
    written: frozenset[Any]  # primary keys inserted/updated/upserted (scalar or tuple)
    deleted: frozenset[Any]  # primary keys deleted
    whole_model: bool = False  # keys unknown (a WHERE-based UPDATE/DELETE, a cascade): treat every row as changed


@dataclass(frozen=True)
class CommittedWrites:
    """Everything one committed transaction wrote, for the hooks."""

    timber: Any  # the runtime.Timber whose database committed
    app_name: str
    by_model: Mapping[str, ModelWrites]


CommitHook = Callable[[CommittedWrites], None]
RowPreparer = Callable[[type[Any], list[dict[str, Any]]], None]

_commit_hooks: dict[str, CommitHook] = {}
_preparers: dict[str, RowPreparer] = {}
# Model class -> its Timber (weak, so a dropped Timber goes); table -> model class, for Core statements.
_timber_of: weakref.WeakKeyDictionary[type[Any], weakref.ref[Any]] = weakref.WeakKeyDictionary()
_model_of_table: weakref.WeakKeyDictionary[Any, type[Any]] = weakref.WeakKeyDictionary()
_cascades: weakref.WeakKeyDictionary[type[Any], tuple[type[Any], ...]] = weakref.WeakKeyDictionary()
_session_of: weakref.WeakKeyDictionary[Connection, weakref.ref[Session]] = weakref.WeakKeyDictionary()
_model_of_name: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()  # table name -> model (SQL text)
_installed = False


def on_commit(hook: CommitHook, *, name: str) -> None:
    """Run `hook` once per committed transaction that wrote rows; a failing hook is logged, the commit stands."""
    _commit_hooks[name] = hook
    _install()


def before_write(hook: RowPreparer, *, name: str) -> None:
    """Run `hook(model, rows)` on the rows of bulk and Core writes before they are written (may change them)."""
    _preparers[name] = hook
    _install()


def attach(timber: Any) -> None:
    """Make the models of this Timber known to the step (called by initialize_timber)."""
    ref = weakref.ref(timber)
    models = list(timber.registry)
    for model in models:
        _timber_of[model] = ref
        if "__table__" in model.__dict__:
            _model_of_table[model.__table__] = model
            _model_of_name[model.__table__.name.lower()] = model
    for model in models:
        _cascades[model] = _dependents(model, models)
    _install()


def prepare_rows(model: type[Any], rows: list[dict[str, Any]]) -> None:
    """Run every before_write preparer on rows about to be written to model."""
    for preparer in _preparers.values():
        preparer(model, rows)


def record_core_write(session: Session, model: type[Any], *, written: Iterable[Any] = (),
                      deleted: Iterable[Any] = (), whole_model: bool = False) -> None:
    """Declare what a statement wrote outside the ORM's view, inside its transaction (seen after commit)."""
    _note(_pending(session), _innermost(session), model, written, deleted, whole_model)


def _note(pending: list[Any], tag: Any, model: type[Any], written: Iterable[Any], deleted: Iterable[Any],
          whole_model: bool) -> None:
    """Add a statement's writes to a pending list (a session's or a bare connection's), cascades included."""
    deleted = list(deleted)
    pending.extend((tag, model, pk, False, False) for pk in written)
    pending.extend((tag, model, pk, True, False) for pk in deleted)
    if whole_model:
        pending.append((tag, model, None, False, True))
    if deleted or whole_model:
        _add_cascades(pending, tag, model)


def validate_rows(model: type[Any], rows: list[dict[str, Any]]) -> None:
    """Before a bulk or Core write: the YAML validators of every column a row writes (inherited ones too)."""
    for row in rows:
        problem = row_problem(model, row)
        if problem is not None:
            raise ValidationError(model.timber_spec.name, problem[0], problem[1])


# -- session events --------------------------------------------------------------------


def _install() -> None:
    global _installed
    if _installed:
        return
    event.listen(Session, "after_begin", _remember_connection)
    event.listen(Session, "before_flush", _flush_begins)
    event.listen(Session, "after_flush", _collect_unit_of_work)
    event.listen(Session, "after_flush_postexec", _flush_ends)
    event.listen(Session, "do_orm_execute", _on_execute)
    event.listen(Session, "after_soft_rollback", _drop_rolled_back)
    event.listen(Session, "after_commit", _run_hooks)
    event.listen(Session, "after_transaction_end", _forget_ended)
    event.listen(Engine, "before_execute", _on_connection_execute, retval=True)
    connection_writes.install(_dispatch)
    _installed = True


def _pending(session: Session) -> list[tuple[Any, type[Any], Any, bool, bool]]:
    pending: list[tuple[Any, type[Any], Any, bool, bool]] = session.info.setdefault(PENDING, [])
    return pending


def _innermost(session: Session) -> Any:
    return session.get_nested_transaction() or session.get_transaction()


def _remember_connection(session: Session, transaction: Any, connection: Connection) -> None:
    _session_of[connection] = weakref.ref(session)


def _collect_unit_of_work(session: Session, flush_context: Any) -> None:
    tx = _innermost(session)
    pending = _pending(session)
    keys_of: dict[type[Any], list[str] | None] = {}  # per class, once per flush: this runs for every row
    for deleted, objects in ((False, (*session.new, *session.dirty)), (True, tuple(session.deleted))):
        for obj in objects:
            cls = type(obj)
            keys = keys_of.get(cls, ())
            if keys == ():
                keys = keys_of[cls] = _pk_keys(cls)
                if keys is not None and deleted:
                    _add_cascades(pending, tx, cls)
            if keys is None:
                continue
            state = sa_inspect(obj)
            ident = tuple(state.dict.get(k) for k in keys)
            if None in ident:  # an expired key: the identity the session knows it by
                ident = tuple(state.identity or (None,))
            if None not in ident:
                pending.append((tx, cls, ident[0] if len(ident) == 1 else ident, deleted, False))


def _pk_keys(cls: type[Any]) -> list[str] | None:
    """The primary-key attribute names of a Timber model; None for any other class."""
    if cls not in _timber_of:
        return None
    return [sa_inspect(cls).get_property_by_column(c).key for c in sa_inspect(cls).primary_key]


def _model_of(statement: Any) -> type[Any] | None:
    table = getattr(statement, "table", None)
    if table is None:
        return None
    model = _model_of_table.get(table)
    if model is None:
        model = _model_of_table.get(getattr(table, "_deannotate", lambda: table)())
    return model


def _on_execute(state: Any) -> Any:
    """Statements through Session.execute: prepare their rows, note what they write, then run them.

    They run from here (invoke_statement), so the connection listener knows these executions are seen.
    """
    statement = state.statement
    if isinstance(statement, TextClause):
        if not state.execution_options.get(SEEN):
            for target in statements.text_targets(statement, _model_of_name):
                record_core_write(state.session, target, whole_model=True)
        return _run_seen(state)
    if not (state.is_insert or state.is_update or state.is_delete):
        return None
    model = _model_of(statement)
    if model is None:
        return _run_seen(state)
    params = state.parameters
    rows = params if isinstance(params, list) else [params] if isinstance(params, dict) else []
    run = not state.execution_options.get(PREPARED) and not state.is_delete
    statement, rows = statements.prepare(model, statement, rows, prepare_rows, run=run)
    if rows and run:
        state.parameters = rows if isinstance(params, list) else rows[0]
    state.statement = statement
    if not state.execution_options.get(SEEN):
        statements.record(lambda **kw: record_core_write(state.session, model, **kw), model, statement, rows,
                          state.is_delete)
    return _run_seen(state)


def _run_seen(state: Any) -> Any:
    info = state.session.info
    info[IN_EXECUTE] = info.get(IN_EXECUTE, 0) + 1
    try:
        return state.invoke_statement()
    finally:
        info[IN_EXECUTE] -= 1


def _flush_begins(session: Session, flush_context: Any, instances: Any) -> None:
    session.info[FLUSHING] = True  # the flush's own statements: prepared by attribute events, noted after it


def _flush_ends(session: Session, flush_context: Any) -> None:
    session.info.pop(FLUSHING, None)


# -- statements on a connection, outside Session.execute and the ORM's own flush ---------------------


def _on_connection_execute(conn: Connection, statement: Any, multiparams: Any, params: Any,
                           execution_options: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    ref = _session_of.get(conn)
    session = ref() if ref is not None else None
    if session is not None and (session.info.get(IN_EXECUTE) or session.info.get(FLUSHING)):
        return statement, multiparams, params  # Session.execute or a flush: seen there
    if execution_options.get(SEEN):
        return statement, multiparams, params
    if isinstance(statement, TextClause):
        for target in statements.text_targets(statement, _model_of_name):
            _note_on_connection(conn, target, statement, [], False, whole=True)
        return statement, multiparams, params
    if not isinstance(statement, UpdateBase):
        return statement, multiparams, params
    model = _model_of(statement)
    if model is None:
        return statement, multiparams, params
    # Here: Core on a connection (a session's or a bare one) and the legacy bulk_*_mappings.
    is_delete = getattr(statement, "is_delete", False)
    rows = list(multiparams) if multiparams else [params] if params else []
    run = not is_delete and not execution_options.get(PREPARED)
    statement, prepared = statements.prepare(model, statement, rows, prepare_rows, run=run)
    _note_on_connection(conn, model, statement, prepared, is_delete)
    if not run or not rows:
        return statement, multiparams, params
    if multiparams:
        return statement, prepared, {}
    return statement, [], prepared[0]


def _note_on_connection(conn: Connection, model: type[Any], statement: Any, rows: list[dict[str, Any]],
                        is_delete: bool, whole: bool = False) -> None:
    ref = _session_of.get(conn)
    session = ref() if ref is not None else None
    if session is not None and session.in_transaction():  # a session's connection: its writes, its savepoints
        if whole:
            record_core_write(session, model, whole_model=True)
        else:
            statements.record(lambda **kw: record_core_write(session, model, **kw), model, statement, rows, is_delete)
        return
    tag, pending = connection_writes.open_writes(conn)

    def note(written: Iterable[Any] = (), deleted: Iterable[Any] = (), whole_model: bool = False) -> None:
        _note(pending, tag, model, written, deleted, whole_model)

    if whole:
        note(whole_model=True)
    else:
        statements.record(note, model, statement, rows, is_delete)


def _dependents(model: type[Any], models: list[type[Any]]) -> tuple[type[Any], ...]:
    """Models whose rows the database changes when a row of `model` is deleted (CASCADE / SET NULL), transitively."""
    found: list[type[Any]] = []
    tables = {model.__table__}
    changed = True
    while changed:
        changed = False
        for other in models:
            if other in found or other is model:
                continue
            if any(fk.ondelete is not None and fk.column.table in tables for fk in other.__table__.foreign_keys):
                found.append(other)
                tables.add(other.__table__)
                changed = True
    return tuple(found)


def _add_cascades(pending: list[Any], tx: Any, model: type[Any]) -> None:
    for dependent in _cascades.get(model, ()):
        pending.append((tx, dependent, None, False, True))


def _drop_rolled_back(session: Session, previous_transaction: Any) -> None:
    """A rollback drops the writes of the transaction rolled back and of the savepoints inside it only."""
    session.info.pop(FLUSHING, None)  # a failed flush ends here
    pending = session.info.get(PENDING)
    if not pending:
        return
    session.info[PENDING] = [entry for entry in pending if not _within(entry[0], previous_transaction)]


def _forget_ended(session: Session, transaction: Any) -> None:
    """A transaction that ended without a commit (a closed session, say) leaves nothing for the next one."""
    if transaction.parent is None:
        _drop_rolled_back(session, transaction)


def _within(tx: Any, ancestor: Any) -> bool:
    while tx is not None:
        if tx is ancestor:
            return True
        tx = tx.parent
    return False


def _run_hooks(session: Session) -> None:
    if session.get_nested_transaction() is not None:
        return  # a savepoint was released (SQLAlchemy says "commit"): the transaction goes on
    pending = session.info.pop(PENDING, None)
    if pending:
        _dispatch(pending)


def _dispatch(pending: list[tuple[Any, type[Any], Any, bool, bool]]) -> None:
    for committed in _group(pending):
        for name, hook in list(_commit_hooks.items()):
            try:
                hook(committed)
            except Exception:  # the commit stands; say loudly which hook did not run through
                log.exception("after-commit hook %r failed for %s", name, sorted(committed.by_model))


def _group(pending: list[tuple[Any, type[Any], Any, bool, bool]]) -> list[CommittedWrites]:
    by_timber: dict[int, tuple[Any, dict[type[Any], tuple[set[Any], set[Any], list[bool]]]]] = {}
    targets: dict[type[Any], list[tuple[set[Any], set[Any], list[bool]]]] = {}  # per class, once per commit
    for _, model, pk, deleted, whole in pending:
        entries = targets.get(model)
        if entries is None:
            ref = _timber_of.get(model)
            timber = ref() if ref is not None else None
            entries = targets[model] = [] if timber is None else [
                by_timber.setdefault(id(timber), (timber, {}))[1].setdefault(cls, (set(), set(), [False]))
                for cls in _timber_ancestry(model)]
        for written, gone, whole_flag in entries:
            if whole:
                whole_flag[0] = True
            elif pk is not None:
                (gone if deleted else written).add(pk)
    return [
        CommittedWrites(timber=timber, app_name=timber.app_name, by_model={
            cls.timber_spec.name: ModelWrites(cls, frozenset(w), frozenset(d), flag[0])
            for cls, (w, d, flag) in models.items()})
        for timber, models in by_timber.values()
    ]


def _timber_ancestry(model: type[Any]) -> list[type[Any]]:
    """The model and the Timber models it inherits from: a parent's readers see the child's rows."""
    return [klass for klass in model.__mro__ if klass in _timber_of]


before_write(validate_rows, name="validators")
