"""Persistence jobs: create, update, upsert or delete records of any YAML model."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from timber_tasks.jobs import persistence
from timber_tasks.tasks.base import TimberTask, get_timber


class PersistTask(TimberTask):
    completes_outbox_itself = True  # the outbox row is deleted in the effect's own transaction


@shared_task(base=PersistTask, bind=True, name="timber.persistence.persist")
def persist(self: PersistTask, model: str, operation: str, data: Any, idempotency_key: str | None = None) -> Any:
    """persist.delay("Order", "create", {...} or [{...}, ...], idempotency_key="...")."""
    return persistence.persist(
        get_timber(), model, operation, data,
        # Without a caller's key, the task id: stable across redeliveries and relay re-publishing.
        idempotency_key=idempotency_key or f"task:{self.request.id}",
        task_name=self.name,
        outbox_task_id=self.request.id if self.tracks_outbox else None,
    )
