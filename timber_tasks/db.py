"""The database manager: one lazily created, fork-safe engine per process, and sessions."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, MetaData, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

from timber_tasks.errors import DatabaseError
from timber_tasks.settings import mask_url

log = logging.getLogger("timber_tasks.db")

SCHEMA_LOCK = 7_351_200  # PostgreSQL advisory lock key: one process creates tables at a time


@dataclass
class QueryStats:
    """Counts kept by the slow-query log."""

    queries: int = 0
    slow_queries: int = 0
    slowest_ms: float = 0.0
    recent_slow: list[tuple[float, str]] = field(default_factory=list)


def engine_options(url: str) -> dict[str, Any]:
    """Pool settings per dialect: SQLite files share one writer, servers get a real pool."""
    dialect = make_url(url).get_backend_name()
    if dialect == "sqlite":
        return {"poolclass": QueuePool, "pool_size": 5, "max_overflow": 5, "pool_pre_ping": True,
                "connect_args": {"timeout": 30, "check_same_thread": False}}
    return {"pool_size": 5, "max_overflow": 10, "pool_pre_ping": True, "pool_recycle": 1800,
            "pool_timeout": 30}


class DatabaseManager:
    """Engine and sessions for one database URL, safe to use on either side of fork()."""

    def __init__(self, url: str, *, slow_query_ms: float = 500.0, echo: bool = False) -> None:
        self.url = url
        self.dialect = make_url(url).get_backend_name()
        self.slow_query_ms = slow_query_ms
        self.echo = echo
        self.stats = QueryStats()
        self._engine: Engine | None = None
        self._sessionmaker: sessionmaker[Session] | None = None
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self.role: str | None = None  # PostgreSQL role every connection switches to (app isolation)
        # Turns a refused write into an error naming model and column (set by initialize_timber).
        self.explain_integrity: Callable[[IntegrityError], Exception | None] | None = None

    def __repr__(self) -> str:
        return f"DatabaseManager({mask_url(self.url)!r})"

    @property
    def engine(self) -> Engine:
        """The engine of this process; a forked child builds its own and never reuses the parent's."""
        if self._engine is not None and self._pid != os.getpid():
            # Drop the parent's pooled connections without closing them: they are the parent's.
            self._engine.dispose(close=False)
            self._engine = None
            self._sessionmaker = None
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    self._engine = self._create_engine()
                    self._pid = os.getpid()
        return self._engine

    def _create_engine(self) -> Engine:
        if self.dialect == "sqlite":
            path = make_url(self.url).database
            if path and path != ":memory:":
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        engine = create_engine(self.url, echo=self.echo, **engine_options(self.url))
        if self.dialect == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
        if self.role is not None:
            event.listen(engine, "connect", self._set_role)
        event.listen(engine, "before_cursor_execute", _start_timer)
        event.listen(engine, "after_cursor_execute", self._record_timing)
        return engine

    def _record_timing(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        started = conn.info.get("timber_query_start")
        if started is None:
            return
        elapsed_ms = (time.perf_counter() - started) * 1000
        self.stats.queries += 1
        if elapsed_ms >= self.slow_query_ms:
            self.stats.slow_queries += 1
            self.stats.slowest_ms = max(self.stats.slowest_ms, elapsed_ms)
            self.stats.recent_slow = [*self.stats.recent_slow[-19:], (elapsed_ms, statement[:500])]
            log.warning("slow query (%.1f ms): %s", elapsed_ms, statement[:500])

    def use_role(self, role: str) -> None:
        """From now on every connection acts as `role`; open pooled connections are replaced."""
        self.role = role
        self.dispose()

    def _set_role(self, dbapi_conn: Any, _record: Any) -> None:
        # SET ROLE lasts for the connection, and the pool's reset (ROLLBACK) keeps it.
        cursor = dbapi_conn.cursor()
        cursor.execute(f'SET ROLE "{self.role}"')
        cursor.close()
        dbapi_conn.commit()

    @property
    def sessionmaker(self) -> sessionmaker[Session]:
        engine = self.engine  # may reset the sessionmaker after a fork
        if self._sessionmaker is None:
            self._sessionmaker = sessionmaker(bind=engine, expire_on_commit=False)
        return self._sessionmaker

    def session(self) -> Session:
        return self.sessionmaker()

    @contextmanager
    def session_scope(self) -> Iterator[Session]:
        """A session that commits when the block succeeds and rolls back when it raises."""
        session = self.session()
        try:
            yield session
            session.commit()
        except IntegrityError as exc:
            session.rollback()
            explained = self.explain_integrity(exc) if self.explain_integrity is not None else None
            if explained is None:
                raise
            raise explained from exc
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def create_tables(self, metadata: MetaData) -> None:
        """Create what is missing, once: a worker and beat starting together on PostgreSQL would race
        in CREATE TABLE / CREATE TYPE (a UniqueViolation on pg_type), so they take turns under a lock."""
        try:
            with self.engine.begin() as conn:
                if self.dialect == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": SCHEMA_LOCK})
                metadata.create_all(conn, checkfirst=True)
        except SQLAlchemyError as exc:
            raise DatabaseError(f"creating tables in {mask_url(self.url)} failed: {exc}") from exc

    def health_check(self) -> dict[str, Any]:
        """Run SELECT 1; report whether it worked and how long it took."""
        started = time.perf_counter()
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            return {"ok": False, "dialect": self.dialect, "error": str(exc).splitlines()[0]}
        return {"ok": True, "dialect": self.dialect,
                "latency_ms": round((time.perf_counter() - started) * 1000, 3)}

    def pool_status(self) -> dict[str, Any]:
        pool = self.engine.pool
        status: dict[str, Any] = {"class": type(pool).__name__, "status": pool.status()}
        if isinstance(pool, QueuePool):
            status.update(size=pool.size(), checked_out=pool.checkedout(),
                          overflow=pool.overflow(), checked_in=pool.checkedin())
        return status

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose(close=self._pid == os.getpid())
            self._engine = None
            self._sessionmaker = None


def _start_timer(conn: Any, *args: Any) -> None:
    conn.info["timber_query_start"] = time.perf_counter()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets readers run beside the one writer; foreign keys are off by default in SQLite.
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
