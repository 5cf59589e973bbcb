"""The database manager: sessions, health, pool status, slow-query log, fork safety."""

from __future__ import annotations

import logging
import os

import pytest
from sqlalchemy import text

from timber_tasks import DatabaseManager


def test_session_scope_commits_on_success_and_rolls_back_on_error(database_url: str) -> None:
    db = DatabaseManager(database_url)
    with db.session_scope() as s:
        s.execute(text("CREATE TABLE t (x INTEGER)"))
    with db.session_scope() as s:
        s.execute(text("INSERT INTO t VALUES (1)"))
    with pytest.raises(RuntimeError), db.session_scope() as s:
        s.execute(text("INSERT INTO t VALUES (2)"))
        raise RuntimeError("boom")
    with db.session_scope() as s:
        assert s.execute(text("SELECT x FROM t")).scalars().all() == [1]
    db.dispose()


def test_health_check_and_pool_status_report_the_engine(database_url: str) -> None:
    db = DatabaseManager(database_url)
    health = db.health_check()
    assert health["ok"] is True and health["dialect"] in {"sqlite", "postgresql"}
    assert health["latency_ms"] >= 0
    status = db.pool_status()
    assert status["class"] == "QueuePool" and status["checked_out"] == 0
    with db.engine.connect():
        assert db.pool_status()["checked_out"] == 1
    db.dispose()


def test_health_check_reports_an_unreachable_server() -> None:
    db = DatabaseManager("postgresql+psycopg2://nobody@127.0.0.1:1/none")
    health = db.health_check()
    assert health["ok"] is False and "error" in health


def test_slow_queries_are_logged_and_counted(database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    db = DatabaseManager(database_url, slow_query_ms=0.0)  # every query counts as slow
    with caplog.at_level(logging.WARNING, logger="timber_tasks.db"), db.engine.connect() as conn:
        conn.execute(text("SELECT 42"))
    assert db.stats.slow_queries >= 1 and "SELECT 42" in db.stats.recent_slow[-1][1]
    assert any("slow query" in r.message and "SELECT 42" in r.message for r in caplog.records)
    db.dispose()


def test_a_forked_child_never_reuses_the_parents_connections(postgres_url: str) -> None:
    db = DatabaseManager(postgres_url)
    with db.engine.connect() as conn:
        parent_backend = conn.execute(text("SELECT pg_backend_pid()")).scalar()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: use the manager, then close everything it opened
        try:
            with db.engine.connect() as conn:
                child_backend = conn.execute(text("SELECT pg_backend_pid()")).scalar()
            db.dispose()
            os.write(write, str(child_backend).encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child_backend = int(os.read(read, 64).decode())
    os.close(read)
    assert child_backend != parent_backend
    # Had the child closed the parent's socket, this pooled connection would now be dead.
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT pg_backend_pid()")).scalar() == parent_backend
    db.dispose()


def test_repr_masks_the_password() -> None:
    assert "s3cret" not in repr(DatabaseManager("postgresql+psycopg2://u:s3cret@h/db"))
