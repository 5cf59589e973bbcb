"""Celery results: the result backend Settings configures (SQL: the embedded SQLite file or any
`db+` URL; Redis), read without Celery. Results, extended-result args and group results are
sealed by the `timber-json` serializer; they are opened with the key ring and matched in clear.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from kombu.exceptions import DecodeError

from timber_tasks.gdpr.stores.base import PersonalDataStore
from timber_tasks.gdpr.subject import GdprError, Subject
from timber_tasks.jobs import sealing

# Result backend URL schemes this store reads; any other backend is refused, never skipped.
SUPPORTED_SCHEMES = ("db+", "redis://", "rediss://")
SQL_TABLES = ("celery_taskmeta", "celery_tasksetmeta")
REDIS_PATTERNS = ("celery-task-meta-*", "celery-taskset-meta-*")
BATCH = 500


def _opened(value: Any) -> Any:
    """A stored value in clear (None if no configured key opens it: then nobody can read it either)."""
    if value is None:
        return None
    raw = bytes(value) if isinstance(value, bytes | memoryview) else str(value).encode("utf-8")
    text = raw.decode("utf-8", errors="replace")
    try:
        return json.loads(sealing.unseal(text))
    except (DecodeError, ValueError):
        return None


class CeleryResultStore(PersonalDataStore):
    name = "celery_results"

    def __init__(self, timber: Any) -> None:
        super().__init__(timber)
        self.url = timber.settings.resolved_result_backend_url
        if not self.url.startswith(SUPPORTED_SCHEMES):
            raise GdprError(f"result backend {self.url.split('://')[0]}:// (RESULT_BACKEND_URL) is not covered by "
                            f"GDPR erasure; use one of {', '.join(SUPPORTED_SCHEMES)} or add a store for it "
                            "in timber_tasks/gdpr/stores/results.py")

    def _holds(self, values: list[Any], text: str | None, subject: Subject) -> bool:
        return subject.held_in([_opened(v) for v in values]) or subject.named_in(text)

    # -- SQL backends ---------------------------------------------------------------------

    def _sql_matches(self, subject: Subject) -> Iterator[tuple[Any, Any]]:
        from sqlalchemy import MetaData, create_engine, inspect, select

        engine = create_engine(self.url[len("db+"):])
        try:
            present = set(inspect(engine).get_table_names())
            meta = MetaData()
            for name in SQL_TABLES:
                if name not in present:
                    continue
                meta.reflect(engine, only=[name])
                table = meta.tables[name]
                sealed = [c for c in ("result", "args", "kwargs", "children") if c in table.c]
                with engine.connect() as conn:
                    rows = conn.execution_options(yield_per=BATCH).execute(
                        select(table.c.id, table.c.traceback if "traceback" in table.c else table.c.id,
                               *[table.c[c] for c in sealed]))
                    found = [row[0] for row in rows if self._holds(list(row[2:]), str(row[1] or ""), subject)]
                for row_id in found:
                    yield table, row_id
        finally:
            engine.dispose()

    def _sql_erase(self, subject: Subject) -> int:
        from sqlalchemy import create_engine, delete

        matches = list(self._sql_matches(subject))
        if matches:
            engine = create_engine(self.url[len("db+"):])
            try:
                with engine.begin() as conn:
                    for table, row_id in matches:
                        conn.execute(delete(table).where(table.c.id == row_id))
            finally:
                engine.dispose()
        return len(matches)

    # -- Redis ------------------------------------------------------------------------------

    def _redis_matches(self, subject: Subject) -> Iterator[bytes]:
        import redis

        client = redis.Redis.from_url(self.url)
        try:
            for pattern in REDIS_PATTERNS:
                keys = list(client.scan_iter(match=pattern, count=1000))
                for start in range(0, len(keys), BATCH):
                    chunk = keys[start:start + BATCH]
                    for key, value in zip(chunk, client.mget(chunk), strict=True):
                        meta = _opened(value)
                        if meta is not None and (subject.held_in(meta)
                                                 or subject.named_in(str(meta.get("traceback") or ""))):
                            yield key
        finally:
            client.close()

    def _redis_erase(self, subject: Subject) -> int:
        import redis

        keys = list(self._redis_matches(subject))
        if keys:
            with redis.Redis.from_url(self.url) as client:
                client.delete(*keys)
        return len(keys)

    # -- the store ----------------------------------------------------------------------------

    @property
    def _is_sql(self) -> bool:
        return self.url.startswith("db+")

    def erase(self, subject: Subject) -> int:
        return self._sql_erase(subject) if self._is_sql else self._redis_erase(subject)

    def residue(self, subject: Subject) -> dict[str, int]:
        matches = self._sql_matches(subject) if self._is_sql else self._redis_matches(subject)
        n = sum(1 for _ in matches)
        return {self.name: n} if n else {}
