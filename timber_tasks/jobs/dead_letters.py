"""The dead-letter table: jobs that finally failed, with payload, error and attempts."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import defer

from timber_tasks.db import DatabaseManager
from timber_tasks.errors import TimberError
from timber_tasks.jobs.tables import DeadLetter
from timber_tasks.models.defaults import utcnow


class DeadLetterNotFoundError(TimberError, LookupError):
    """Raised when a dead-letter id does not exist."""

    def __init__(self, letter_id: int) -> None:
        self.letter_id = letter_id
        super().__init__(f"no dead letter with id {letter_id}; `timber-tasks dlq list` shows them")


def record(db: DatabaseManager, *, task_id: str, task_name: str, args: Any, kwargs: Any,
           error: BaseException, traceback: str | None, attempts: int) -> int:
    with db.session_scope() as session:
        letter = DeadLetter(
            task_id=task_id, task_name=task_name, args=list(args or ()), kwargs=dict(kwargs or {}),
            error_type=type(error).__name__, error=str(error)[:10_000], traceback=traceback,
            attempts=attempts,
        )
        session.add(letter)
        session.flush()
        return letter.id


def list_letters(db: DatabaseManager, *, include_retried: bool = False, limit: int = 100,
                 payload: bool = True) -> list[DeadLetter]:
    """Newest first; payload=False leaves out the sealed arguments, so listing needs no key."""
    query = select(DeadLetter).order_by(DeadLetter.id.desc()).limit(limit)
    if not payload:
        query = query.options(defer(DeadLetter.args), defer(DeadLetter.kwargs), defer(DeadLetter.traceback))
    if not include_retried:
        query = query.where(DeadLetter.retried_at.is_(None))
    with db.session_scope() as session:
        return list(session.scalars(query))


def get(db: DatabaseManager, letter_id: int) -> DeadLetter:
    with db.session_scope() as session:
        letter = session.get(DeadLetter, letter_id)
        if letter is None:
            raise DeadLetterNotFoundError(letter_id)
        return letter


def mark_retried(db: DatabaseManager, letter_id: int, retry_task_id: str) -> None:
    with db.session_scope() as session:
        letter = session.get(DeadLetter, letter_id)
        if letter is None:
            raise DeadLetterNotFoundError(letter_id)
        letter.retried_at = utcnow()
        letter.retry_task_id = retry_task_id
