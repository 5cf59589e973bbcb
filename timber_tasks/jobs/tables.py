"""The platform's own tables, beside the YAML models: created and migrated with them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from timber_tasks.jobs.sealing import SealedJSON
from timber_tasks.models.defaults import utcnow


class SystemBase(DeclarativeBase):
    pass


class JobRecord(SystemBase):
    """One finished write job: its idempotency key, committed in the same transaction as its effect."""

    __tablename__ = "timber_job_records"

    idempotency_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    task_name: Mapped[str] = mapped_column(String(200))
    result: Mapped[Any] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class OutboxMessage(SystemBase):
    """A job to publish, and on brokers that keep no unacked copy, to watch until it finishes.

    status: pending (not yet on the broker) -> published (on the broker, not finished) -> done.
    """

    __tablename__ = "timber_outbox"
    __table_args__ = (Index("ix_timber_outbox_status_updated", "status", "updated_at"),)

    task_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    task_name: Mapped[str] = mapped_column(String(200))
    args: Mapped[Any] = mapped_column(SealedJSON)  # may carry values of encrypted fields
    kwargs: Mapped[Any] = mapped_column(SealedJSON)
    options: Mapped[Any] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(12), default="pending")
    publish_count: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class DeadLetter(SystemBase):
    """A job that finally failed, kept with everything needed to read and re-run it."""

    __tablename__ = "timber_dead_letters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(String(64), index=True)
    task_name: Mapped[str] = mapped_column(String(200))
    args: Mapped[Any] = mapped_column(SealedJSON)  # may carry values of encrypted fields
    kwargs: Mapped[Any] = mapped_column(SealedJSON)
    error_type: Mapped[str] = mapped_column(String(200))
    error: Mapped[str] = mapped_column(Text)
    traceback: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer)
    failed_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    retried_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    retry_task_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


system_metadata = SystemBase.metadata
