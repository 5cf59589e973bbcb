"""The base of every timber task: retries for transient faults, dead letters, the outbox."""

from __future__ import annotations

import logging
import random
from typing import Any

from celery import Task, current_app
from celery.result import AsyncResult
from celery.utils import uuid
from sqlalchemy import event
from sqlalchemy.orm import Session

from timber_tasks import runtime
from timber_tasks.brokers import broker_keeps_unacked, settings_of
from timber_tasks.gdpr.audit import acting_as_job
from timber_tasks.jobs import dead_letters, outbox
from timber_tasks.jobs.faults import is_transient
from timber_tasks.runtime import Timber

log = logging.getLogger("timber_tasks.tasks")

# Options worth keeping with an outbox row; the rest are per-publish details.
PORTABLE_OPTIONS = ("countdown", "expires", "priority")
_QUEUED = "timber_outbox_queued"


def get_timber() -> Timber:
    return runtime.for_this_process()


def _portable(options: dict[str, Any]) -> dict[str, Any]:
    return {k: options[k] for k in PORTABLE_OPTIONS if isinstance(options.get(k), int | float)}


class TimberTask(Task):
    """Retries transient faults with capped exponential backoff and jitter; dead-letters the rest."""

    backoff_cap = 60.0
    completes_outbox_itself = False  # True where the task deletes its outbox row inside its own transaction

    @property
    def tracks_outbox(self) -> bool:
        """On brokers without unacked redelivery, the outbox row is the job's only durable record."""
        return not broker_keeps_unacked(str(self.app.conf.broker_url))

    @property
    def retry_limit(self) -> int:
        return settings_of(self.app).task_max_retries

    def backoff(self, retries: int) -> float:
        delay: float = min(self.backoff_cap, settings_of(self.app).retry_backoff * 2**retries)
        return delay / 2 + random.uniform(0, delay / 2)

    def apply_async(self, args: Any = None, kwargs: Any = None, task_id: str | None = None,
                    **options: Any) -> AsyncResult:
        if not self.tracks_outbox:
            return super().apply_async(args, kwargs, task_id=task_id, **options)
        task_id = task_id or uuid()
        db = get_timber().db
        with db.session_scope() as session:
            outbox.add(session, task_id=task_id, task_name=self.name, args=args, kwargs=kwargs,
                       options=_portable(options), status="published")
        try:
            return super().apply_async(args, kwargs, task_id=task_id, **options)
        except Exception as exc:  # recorded: the relay publishes it when the broker is back
            log.warning("publishing %s %s failed (%s); the outbox relay will retry", self.name, task_id, exc)
            outbox.mark_failed(db, task_id, repr(exc))
            return self.AsyncResult(task_id)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            with acting_as_job(self.request.id, self.name):  # the GDPR change record names the job
                return super().__call__(*args, **kwargs)
        except Exception as exc:
            if is_transient(exc) and self.request.retries < self.retry_limit:
                log.warning("%s %s: transient %s, retry %d", self.name, self.request.id, type(exc).__name__,
                            self.request.retries + 1)
                raise self.retry(exc=exc, countdown=self.backoff(self.request.retries),
                                 max_retries=self.retry_limit) from exc
            raise

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        if self.tracks_outbox and not self.completes_outbox_itself:
            with get_timber().db.session_scope() as session:
                outbox.complete(session, task_id)

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        """The job is finished, failed: keep it in the dead-letter table, where nothing is lost."""
        db = get_timber().db
        letter = dead_letters.record(db, task_id=task_id, task_name=self.name, args=args, kwargs=kwargs,
                                     error=exc, traceback=str(einfo) if einfo else None,
                                     attempts=self.request.retries + 1)
        log.error("%s %s failed for good (%s: %s); dead letter %d", self.name, task_id,
                  type(exc).__name__, exc, letter)
        if self.tracks_outbox:
            with db.session_scope() as session:
                outbox.complete(session, task_id)


def enqueue(session: Session, task: Task | str, *args: Any, options: dict[str, Any] | None = None,
            **kwargs: Any) -> str:
    """Enqueue a job inside the caller's transaction: published only if, and once, it commits.

    The row is written with the caller's changes; after commit it is published at once, and
    if the broker is down then, the outbox relay publishes it later. Returns the task id.
    """
    name = task if isinstance(task, str) else task.name
    task_id = uuid()
    outbox.add(session, task_id=task_id, task_name=name, args=args, kwargs=kwargs, options=options or {})
    if _QUEUED not in session.info:
        session.info[_QUEUED] = []
        event.listen(session, "after_commit", _publish_committed)
        event.listen(session, "after_rollback", lambda s: s.info.get(_QUEUED, []).clear())
    session.info[_QUEUED].append(task_id)
    return task_id


def _publish_committed(session: Session) -> None:
    queued = list(session.info.get(_QUEUED, []))
    session.info[_QUEUED] = []
    if queued:
        from timber_tasks.tasks.relay import publish_rows

        publish_rows(current_app._get_current_object(), get_timber(), queued)
