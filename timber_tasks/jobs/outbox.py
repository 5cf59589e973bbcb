"""The outbox: jobs written in a database transaction, published after it commits.

Rows are `pending` until the broker has them. On brokers that keep no unacked copy
(the embedded ones), rows then stay `published` until the job's effect commits, so a
job lost with a killed worker is published again by the relay. Finished rows are deleted.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from timber_tasks.db import DatabaseManager
from timber_tasks.jobs.tables import OutboxMessage
from timber_tasks.models.defaults import utcnow


def add(session: Session, *, task_id: str, task_name: str, args: Iterable[Any] | None,
        kwargs: dict[str, Any] | None, options: dict[str, Any] | None, status: str = "pending") -> OutboxMessage:
    """Record a job in the caller's transaction (merge: a retry of the same task id updates its row)."""
    message = OutboxMessage(
        task_id=task_id, task_name=task_name, args=list(args or ()), kwargs=dict(kwargs or {}),
        options=dict(options or {}), status=status, updated_at=utcnow(),
    )
    return session.merge(message)


def mark_published(db: DatabaseManager, task_ids: list[str], *, keep: bool) -> None:
    """The broker has these jobs; keep=True watches them until done, keep=False forgets them."""
    if not task_ids:
        return
    with db.session_scope() as session:
        if keep:
            session.execute(update(OutboxMessage).where(OutboxMessage.task_id.in_(task_ids)).values(
                status="published", updated_at=utcnow(), publish_count=OutboxMessage.publish_count + 1))
        else:
            session.execute(delete(OutboxMessage).where(OutboxMessage.task_id.in_(task_ids)))


def mark_failed(db: DatabaseManager, task_id: str, error: str) -> None:
    """Publishing failed: back to pending, so the relay tries again soon, not after the time limit."""
    with db.session_scope() as session:
        session.execute(update(OutboxMessage).where(OutboxMessage.task_id == task_id).values(
            status="pending", last_error=error[:2000], updated_at=utcnow()))


def complete(session: Session, task_id: str) -> None:
    """The job's effect commits in this transaction: its outbox row goes with it."""
    session.execute(delete(OutboxMessage).where(OutboxMessage.task_id == task_id))


def due(db: DatabaseManager, *, pending_after: timedelta, published_after: timedelta,
        limit: int = 500) -> list[OutboxMessage]:
    """Rows to publish: pending ones no committer published, and published ones that never finished."""
    now = utcnow()
    with db.session_scope() as session:
        return list(session.scalars(
            select(OutboxMessage).where(or_(
                (OutboxMessage.status == "pending") & (OutboxMessage.updated_at <= now - pending_after),
                (OutboxMessage.status == "published") & (OutboxMessage.updated_at <= now - published_after),
            )).order_by(OutboxMessage.created_at).limit(limit)
        ))


def counts(db: DatabaseManager) -> dict[str, int]:
    with db.session_scope() as session:
        rows = session.execute(select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status))
        return {status: int(n) for status, n in rows}
