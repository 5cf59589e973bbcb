"""Job bookkeeping that may carry a subject's data: job records, outbox rows, dead letters.

Outbox and dead-letter arguments are sealed (jobs/sealing.py); the SealedJSON column type
opens them with the key ring as rows stream past, so matching happens on the clear JSON.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

from sqlalchemy import delete, select, update

from timber_tasks.gdpr.stores.base import PersonalDataStore
from timber_tasks.gdpr.subject import Subject
from timber_tasks.jobs.tables import DeadLetter, JobRecord, OutboxMessage

SCAN_ROWS = 1000
ERASED_KEY = "gdpr-erased:"  # an idempotency key that named the subject becomes this + its keyed hash


class JobRecordStore(PersonalDataStore):
    """Idempotency records: a persist job's result holds the record's non-encrypted fields."""

    name = "job_records"
    claims_tables = (JobRecord.__tablename__,)

    def _matching(self, subject: Subject) -> Iterator[tuple[str, bool]]:
        """(key, whether the key itself names the subject) of every record holding the subject's data."""
        with self.timber.db.session_scope() as session:
            query = select(JobRecord.idempotency_key, JobRecord.result).execution_options(yield_per=SCAN_ROWS)
            for key, result in session.execute(query):
                in_key = subject.named_in(key)
                if in_key or subject.held_in(result):
                    yield key, in_key

    def erase(self, subject: Subject) -> int:
        found = list(self._matching(subject))
        with self.timber.db.session_scope() as session:
            for key, in_key in found:
                record = session.get(JobRecord, key)
                if record is None:
                    continue
                # Keep the record (a redelivered job stays a no-op), without the data.
                result = record.result if isinstance(record.result, dict) else {}
                redacted = {k: result[k] for k in ("model", "operation", "count") if k in result}
                new_key = ERASED_KEY + subject.hash[:16] + ":" + _short_hash(key) if in_key else key
                if new_key != key and session.get(JobRecord, new_key) is not None:
                    # The same job ran again after an earlier erasure: its erased record is there already.
                    session.execute(delete(JobRecord).where(JobRecord.idempotency_key == key))
                    continue
                session.execute(update(JobRecord).where(JobRecord.idempotency_key == key).values(
                    result={**redacted, "erased": True}, idempotency_key=new_key))
        return len(found)

    def residue(self, subject: Subject) -> dict[str, int]:
        n = sum(1 for _ in self._matching(subject))
        return {"job_records": n} if n else {}


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class _SealedJobStore(PersonalDataStore):
    """Rows whose sealed arguments (or error text) carry the subject: deleted whole."""

    table: Any
    key = "id"  # the column rows are deleted by

    def _ids(self, subject: Subject) -> list[Any]:
        t = self.table
        ids = []
        with self.timber.db.session_scope() as session:
            query = select(t).execution_options(yield_per=SCAN_ROWS)
            for row in session.scalars(query):
                if subject.held_in([row.args, row.kwargs]) or any(
                        subject.named_in(getattr(row, f, None)) for f in ("error", "traceback",
                                                                                          "last_error")):
                    ids.append(getattr(row, self.key))
        return ids

    def erase(self, subject: Subject) -> int:
        ids = self._ids(subject)
        if ids:
            with self.timber.db.session_scope() as session:
                session.execute(delete(self.table).where(getattr(self.table, self.key).in_(ids)))
        return len(ids)

    def residue(self, subject: Subject) -> dict[str, int]:
        n = len(self._ids(subject))
        return {self.name: n} if n else {}


class OutboxStore(_SealedJobStore):
    """Jobs waiting to be (re)published: a pending job about an erased subject must not run."""

    name = "outbox"
    claims_tables = (OutboxMessage.__tablename__,)
    table = OutboxMessage
    key = "task_id"


class DeadLetterStore(_SealedJobStore):
    name = "dead_letters"
    claims_tables = (DeadLetter.__tablename__,)
    table = DeadLetter
