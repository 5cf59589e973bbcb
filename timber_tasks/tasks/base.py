"""The base of every timber task: retries for transient faults, dead letters, the outbox."""

from __future__ import annotations

import contextvars
import inspect
import logging
import random
import time
from typing import Any

from celery import Celery, Task, current_app, shared_task
from celery.local import Proxy
from celery.result import AsyncResult
from celery.utils import uuid
from sqlalchemy import event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from timber_tasks import runtime
from timber_tasks.brokers import broker_keeps_unacked, settings_of
from timber_tasks.errors import EnqueueError, ValidationError
from timber_tasks.gdpr.audit import acting_as_job
from timber_tasks.jobs import dead_letters, outbox, payloads
from timber_tasks.jobs.faults import is_transient
from timber_tasks.runtime import Timber

log = logging.getLogger("timber_tasks.tasks")

# Options worth keeping with an outbox row; the rest are per-publish details.
PORTABLE_OPTIONS = ("countdown", "expires", "priority")
_QUEUED = "timber_outbox_queued"
PROGRESS = "PROGRESS"  # the state of a running job that reports how far it is
PROGRESS_EVERY_S = 0.5  # at most this often: one event and one backend write per report
APP_HEADER = "timber_app"  # the app a job acts for: the sender's (see README, "which app a job acts for")
# The app of the job this thread is running: jobs it sends (retries included) act for that app too.
_acting_for: contextvars.ContextVar[str | None] = contextvars.ContextVar("timber_acting_for", default=None)


def get_timber() -> Timber:
    return runtime.for_this_process()


def timber_app() -> Celery:
    """The Celery app our tasks send through: the current one if it is a timber app, else ours.

    An app process that imports a task module and calls delay() never built a Celery app
    itself; Celery's fallback would be its unconfigured `default` app (amqp://localhost).
    """
    app = current_app._get_current_object()
    if getattr(app, "timber_settings", None) is None:
        from timber_tasks.celery_app import app
    return app


def timber_task(name: str, **options: Any) -> Any:
    """Like Celery's @shared_task (every app gets the task), but the task is always taken from timber_app()."""
    def register(fun: Any) -> Any:
        shared_task(name=name, **options)(fun)
        return Proxy(lambda: timber_app().tasks[name])

    return register


def _portable(options: dict[str, Any]) -> dict[str, Any]:
    kept: dict[str, Any] = {k: options[k] for k in PORTABLE_OPTIONS if isinstance(options.get(k), int | float)}
    kept["headers"] = {APP_HEADER: options["headers"][APP_HEADER]}
    return kept


def sender_app() -> str:
    """The app a job sent from here acts for: the running job's, else this process's Timber's."""
    return _acting_for.get() or runtime.current_app_name()


def with_app_header(options: dict[str, Any]) -> dict[str, Any]:
    headers = dict(options.get("headers") or {})
    headers.setdefault(APP_HEADER, sender_app())
    return {**options, "headers": headers}


class ProgressReport:
    """How far a running job is, told twice: to the result backend (state PROGRESS, for
    `AsyncResult.info` and the CLI's `--follow`) and as a `task-progress` event, which Flower
    shows as the task's state and, in its Result field, `text`. Both hold counts and model
    names only: never a person's data (Flower keeps what it is sent)."""

    def __init__(self, task: Task, every: float = PROGRESS_EVERY_S) -> None:
        self.task, self.every, self._last = task, every, float("-inf")

    def __call__(self, meta: dict[str, Any], text: str, *, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._last < self.every:
            return
        self._last = now
        request = self.task.request
        if request.id is None:  # called in-process, not as a job: nobody to tell
            return
        self.task.update_state(state=PROGRESS, meta=meta)
        if request.hostname:  # a worker runs it (an eager call has no events to send)
            self.task.send_event("task-progress", result=text)


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

    @property
    def acting_app(self) -> str | None:
        """The app the running job acts for (its message's header); None: the worker's own app."""
        request = self.request
        app = getattr(request, APP_HEADER, None) or (getattr(request, "headers", None) or {}).get(APP_HEADER)
        return str(app) if app else None

    @property
    def timber(self) -> Timber:
        """The Timber acting for the job's app: its models, scopes and database role."""
        return runtime.for_app(self.acting_app)

    def bind_arguments(self, args: Any, kwargs: Any) -> inspect.BoundArguments:
        """The call's arguments by parameter name; wrong ones fail here, not as a job that never ends."""
        try:
            return inspect.signature(self.run).bind(*(args or ()), **(kwargs or {}))
        except TypeError as exc:
            raise ValidationError(self.name, None, f"wrong arguments: {exc}") from None

    def check_call(self, args: Any, kwargs: Any) -> None:
        """Refuse, before anything is written, a call whose arguments no store would keep as given."""
        bound = self.bind_arguments(args, kwargs)
        for name, value in bound.arguments.items():
            problem = payloads.value_problem(value)
            if problem is not None:
                path, message = problem
                raise ValidationError(self.name, ".".join(map(str, [name, *path])), message)

    def apply_async(self, args: Any = None, kwargs: Any = None, task_id: str | None = None,
                    **options: Any) -> AsyncResult:
        self.check_call(args, kwargs)
        options = with_app_header(options)
        if not self.tracks_outbox:
            return super().apply_async(args, kwargs, task_id=task_id, **options)
        if task_id is not None and options.get("retries") and task_id == self.request.id:
            # A retry of the running job: its outbox row is there until the effect commits, so it
            # needs no new one (and must not need the database, which may be why it retries).
            return super().apply_async(args, kwargs, task_id=task_id, **options)
        task_id = task_id or uuid()
        db = get_timber().db
        try:
            with db.session_scope() as session:
                outbox.add(session, task_id=task_id, task_name=self.name, args=args, kwargs=kwargs,
                           options=_portable(options), status="published")
        except SQLAlchemyError as exc:
            raise EnqueueError(self.name, str(getattr(exc, "orig", None) or exc).splitlines()[0]) from exc
        try:
            return super().apply_async(args, kwargs, task_id=task_id, **options)
        except Exception as exc:  # recorded: the relay publishes it when the broker is back
            log.warning("publishing %s %s failed (%s); the outbox relay will retry", self.name, task_id, exc)
            outbox.mark_failed(db, task_id, repr(exc))
            return self.AsyncResult(task_id)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        token = _acting_for.set(self.acting_app)
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
        finally:
            _acting_for.reset(token)

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
        # The message may quote the input (a person's data): the log names the field, the dead letter has it all.
        where = ".".join(str(p) for p in (getattr(exc, "model", None), getattr(exc, "field", None)) if p)
        log.error("%s %s failed for good (%s%s); dead letter %d", self.name, task_id, type(exc).__name__,
                  f" on {where}" if where else "", letter)
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
    outbox.add(session, task_id=task_id, task_name=name, args=args, kwargs=kwargs,
               options=with_app_header(options or {}))
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

        publish_rows(timber_app(), get_timber(), queued)
