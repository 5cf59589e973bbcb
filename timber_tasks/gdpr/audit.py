"""The audit log of exports and erasures, and the record of every write to personal data.

The record hangs on the after-write step (features/writes.py), so every write path is
seen: ORM, bulk, Core statements through a session, cascades. It keeps which app or job
wrote, when, how many rows, and keyed hashes of the row keys and subjects: never the data.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import insert, select

from timber_tasks.features.writes import CommittedWrites, ModelWrites, on_commit
from timber_tasks.gdpr.subject import SubjectHasher
from timber_tasks.gdpr.tables import AuditEntry, PersonalDataChange
from timber_tasks.models.defaults import utcnow

log = logging.getLogger("timber_tasks.gdpr")

LOOKUP_CHUNK = 500  # row keys per query when finding the subjects of written rows

# (job id, job name) of the job running in this context; the Celery task base sets it.
_acting_job: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar("timber_acting_job",
                                                                                     default=None)


@contextmanager
def acting_as_job(job_id: str | None, job_name: str) -> Iterator[None]:
    """Writes inside this block are recorded as made by this job."""
    token = _acting_job.set((job_id or "", job_name))
    try:
        yield
    finally:
        _acting_job.reset(token)


def record(timber: Any, action: str, subject_hash: str, actor: str, counts: dict[str, Any],
           detail: str | None = None) -> None:
    """One audit entry; counts and details must hold no personal data (callers pass counts and hashes)."""
    with timber.db.session_scope() as session:
        session.add(AuditEntry(at=utcnow(), action=action, actor=actor[:200], app_name=timber.app_name,
                               subject_hash=subject_hash, counts=counts, detail=detail))


def entries(timber: Any, subject_hash: str | None = None) -> list[AuditEntry]:
    query = select(AuditEntry).order_by(AuditEntry.id)
    if subject_hash is not None:
        query = query.where(AuditEntry.subject_hash == subject_hash)
    with timber.db.session_scope() as session:
        return list(session.scalars(query))


def record_personal_writes(committed: CommittedWrites) -> None:
    """After-write hook: one change row per GDPR model the transaction wrote."""
    timber = committed.timber
    gdpr_writes = [w for w in committed.by_model.values() if _gdpr_of(w.model) is not None]
    if not gdpr_writes or (timber.keyring is None and timber.settings.gdpr_subject_key is None):
        return  # no key to hash subjects under (and then no encrypted model could load either)
    hasher = SubjectHasher.of(timber)
    job = _acting_job.get()
    rows = [_change_row(timber, hasher, w, committed.app_name, job) for w in gdpr_writes]
    with timber.db.session_scope() as session:
        session.execute(insert(PersonalDataChange), rows)


def _gdpr_of(model: type[Any]) -> Any:
    spec = getattr(model, "timber_spec", None)
    gdpr = spec.spec.gdpr if spec is not None else None
    return gdpr if gdpr is not None and gdpr.enabled else None


def _change_row(timber: Any, hasher: SubjectHasher, writes: ModelWrites, app_name: str,
                job: tuple[str, str] | None) -> dict[str, Any]:
    keys = writes.written | writes.deleted
    return {"at": utcnow(), "app_name": app_name, "job_id": job[0] if job else None,
            "job_name": job[1] if job else None, "model": writes.model.timber_spec.name,
            "written": len(writes.written), "deleted": len(writes.deleted), "whole_model": writes.whole_model,
            "row_hashes": sorted(hasher.hash(_key_text(k)) for k in keys),
            "subject_hashes": sorted(hasher.hash(s) for s in _subjects(timber, writes))}


def _key_text(pk: Any) -> str:
    return ":".join(str(p) for p in pk) if isinstance(pk, tuple) else str(pk)


def _subjects(timber: Any, writes: ModelWrites) -> set[str]:
    """The subjects whose rows were written (deleted rows are gone: their keys are hashed above)."""
    from sqlalchemy import inspect as sa_inspect

    model = writes.model
    field = _gdpr_of(model).user_id_field
    mapper = sa_inspect(model)
    pk_cols = mapper.primary_key
    if len(pk_cols) != 1 or not writes.written:
        return set()
    pk_attr = mapper.get_property_by_column(pk_cols[0]).key
    if pk_attr == field:
        return {str(k) for k in writes.written}
    found: set[str] = set()
    keys = list(writes.written)
    with timber.db.session_scope() as session:
        for start in range(0, len(keys), LOOKUP_CHUNK):
            chunk = keys[start:start + LOOKUP_CHUNK]
            column = getattr(model, field)
            found.update(str(v) for v in session.scalars(
                select(column).where(getattr(model, pk_attr).in_(chunk), column.isnot(None)).distinct()))
    return found


on_commit(record_personal_writes, name="gdpr-changes")
