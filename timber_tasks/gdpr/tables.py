"""The GDPR platform tables: erasure ledger, audit log, personal-data change record.

They join the platform's system metadata (jobs/tables.py), so create_tables and the
migrations see them. None of them holds a subject's id in clear: keyed hashes, counts, ids
of jobs and the apps' row keys only as keyed hashes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from timber_tasks.jobs.sealing import SealedJSON
from timber_tasks.jobs.tables import SystemBase
from timber_tasks.models.defaults import utcnow


class ErasureRecord(SystemBase):
    """One erasure: requested -> completed. Replayed after a database restore.

    `sealed_subject` holds the subject id (sealed with the key ring) only while the erasure
    runs, so a job carries just this row's id and an interrupted run can finish; it is
    cleared on completion, leaving the keyed hash.
    """

    __tablename__ = "timber_gdpr_erasures"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    subject_hash: Mapped[str] = mapped_column(String(64), index=True)
    hash_key: Mapped[str | None] = mapped_column(String(12), nullable=True)  # SubjectHasher.key_id of the hash
    sealed_subject: Mapped[Any] = mapped_column(SealedJSON, nullable=True)
    status: Mapped[str] = mapped_column(String(12), default="requested")  # requested | completed
    requested_by: Mapped[str] = mapped_column(String(200))
    requested_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    runs: Mapped[int] = mapped_column(Integer, default=0)
    counts: Mapped[Any] = mapped_column(JSON, nullable=True)


class AuditEntry(SystemBase):
    """Who exported, erased or replayed what, when, with what counts (no data, no id in clear)."""

    __tablename__ = "timber_gdpr_audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    action: Mapped[str] = mapped_column(String(20))  # export | erase | replay
    actor: Mapped[str] = mapped_column(String(200))
    app_name: Mapped[str] = mapped_column(String(50))
    subject_hash: Mapped[str] = mapped_column(String(64), index=True)
    counts: Mapped[Any] = mapped_column(JSON)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)


class PersonalDataChange(SystemBase):
    """One committed transaction's writes to one GDPR model: when, by which app or job, which rows (hashed)."""

    __tablename__ = "timber_gdpr_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    app_name: Mapped[str] = mapped_column(String(50))
    job_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    job_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    model: Mapped[str] = mapped_column(String(100))
    written: Mapped[int] = mapped_column(Integer, default=0)
    deleted: Mapped[int] = mapped_column(Integer, default=0)
    whole_model: Mapped[bool] = mapped_column(Boolean, default=False)  # a WHERE-based write: keys unknown
    row_hashes: Mapped[Any] = mapped_column(JSON)  # keyed hashes of the row keys
    subject_hashes: Mapped[Any] = mapped_column(JSON)  # keyed hashes of the subjects written


# Platform tables that hold no personal data, and why: the store-list test accepts only these unclaimed.
NO_PERSONAL_DATA = {
    ErasureRecord.__tablename__: "keyed hashes; the sealed id only while an erasure runs (cleared on completion)",
    AuditEntry.__tablename__: "keyed hashes and counts",
    PersonalDataChange.__tablename__: "keyed hashes of row keys and subjects, counts, job ids",
}
