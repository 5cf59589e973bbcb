"""Writes made on a bare connection (no session): kept on the connection until its COMMIT is done.

SQLAlchemy's connection `commit` event comes before the COMMIT is sent, so the writes wait
there and go to the hooks when the connection begins its next transaction or goes back to
the pool, both after the commit. A rollback drops them; a rolled-back savepoint drops the
writes made inside it (each write is tagged with the savepoints open when it was made).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import Pool

# Connection.info keys: writes of the open transaction; writes whose commit is done; open savepoints.
PENDING, COMMITTED, SAVEPOINTS = "timber_conn_writes", "timber_conn_committed", "timber_savepoints"

Entry = tuple[Any, type[Any], Any, bool, bool]  # (savepoint tag, model, primary key, deleted, whole model)
Dispatch = Callable[[list[Entry]], None]


def install(dispatch: Dispatch) -> None:
    """Listen on every engine and pool; `dispatch` gets the writes of each finished commit."""

    def begins(conn: Connection) -> None:
        committed = conn.info.pop(COMMITTED, None)
        if committed:
            dispatch(committed)

    def checked_in(dbapi_connection: Any, record: Any) -> None:
        if record is None:
            return
        record.info.pop(PENDING, None)
        record.info.pop(SAVEPOINTS, None)
        committed = record.info.pop(COMMITTED, None)
        if committed:
            dispatch(committed)

    event.listen(Engine, "begin", begins)
    event.listen(Engine, "commit", _commits)
    event.listen(Engine, "rollback", _rolls_back)
    event.listen(Engine, "savepoint", _savepoint_begins)
    event.listen(Engine, "rollback_savepoint", _savepoint_rolls_back)
    event.listen(Engine, "release_savepoint", _savepoint_released)
    event.listen(Pool, "checkin", checked_in)


def open_writes(conn: Connection) -> tuple[tuple[str, ...], list[Entry]]:
    """The tag for a write made now (the open savepoints) and the list it goes into."""
    return tuple(conn.info.get(SAVEPOINTS, ())), conn.info.setdefault(PENDING, [])


def _commits(conn: Connection) -> None:
    pending = conn.info.pop(PENDING, None)
    conn.info.pop(SAVEPOINTS, None)
    if pending:
        conn.info.setdefault(COMMITTED, []).extend(pending)


def _rolls_back(conn: Connection) -> None:
    conn.info.pop(PENDING, None)
    conn.info.pop(SAVEPOINTS, None)


def _savepoint_begins(conn: Connection, name: str) -> None:
    conn.info.setdefault(SAVEPOINTS, []).append(name)


def _savepoint_rolls_back(conn: Connection, name: str, context: Any) -> None:
    pending = conn.info.get(PENDING)
    if pending:
        conn.info[PENDING] = [entry for entry in pending if name not in entry[0]]
    _savepoint_released(conn, name, context)


def _savepoint_released(conn: Connection, name: str, context: Any) -> None:
    names = conn.info.get(SAVEPOINTS)
    if names and name in names:
        del names[names.index(name):]
