"""Persistence jobs: create, update, upsert or delete records of any YAML model."""

from __future__ import annotations

from typing import Any

from timber_tasks.errors import ValidationError
from timber_tasks.jobs import payloads, persistence
from timber_tasks.tasks.base import TimberTask, timber_task


class PersistTask(TimberTask):
    completes_outbox_itself = True  # the outbox row is deleted in the effect's own transaction

    def check_call(self, args: Any, kwargs: Any) -> None:
        """At delay(): the model name, operation, record shapes, key and every value, with the field named."""
        call = self.bind_arguments(args, kwargs).arguments
        model, operation, data = call["model"], call["operation"], call["data"]
        if not isinstance(model, str) or not model.strip() or payloads.value_problem(model):
            raise ValidationError(repr(model)[:60], None, "the model name must be a non-empty string")
        if operation not in persistence.OPERATIONS:
            raise ValidationError(model, None, f"unknown operation {operation!r:.60}; use one of "
                                  f"{', '.join(persistence.OPERATIONS)}")
        if isinstance(data, list | tuple) and not data:
            raise ValidationError(model, None, "a batch job needs at least one record")
        problem = payloads.key_problem(call.get("idempotency_key"))
        if problem:
            raise ValidationError(model, "idempotency_key", problem)
        for index, record in payloads.record_fields(data):
            if not isinstance(record, dict):
                raise ValidationError(model, None, f"expected an object of fields, got {type(record).__name__}",
                                      ids=index)
            found = payloads.value_problem(record)
            if found is not None:
                path, message = found
                field = str(path[0]) if path else None
                raise ValidationError(model, field, ".".join(map(str, path[1:])) + (" " if path[1:] else "")
                                      + message, ids=index)


@timber_task("timber.persistence.persist", base=PersistTask, bind=True)
def persist(self: PersistTask, model: str, operation: str, data: Any, idempotency_key: str | None = None) -> Any:
    """persist.delay("Order", "create", {...} or [{...}, ...], idempotency_key="...")."""
    return persistence.persist(
        self.timber, model, operation, data,
        # Without a caller's key, the task id: stable across redeliveries and relay re-publishing.
        idempotency_key=idempotency_key or f"task:{self.request.id}",
        task_name=self.name,
        outbox_task_id=self.request.id if self.tracks_outbox else None,
    )
