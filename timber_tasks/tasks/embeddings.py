"""Embedding jobs on the `embeddings` queue, and the after-commit hook that enqueues them.

Every committed write of a vector_search model (ORM, bulk, Core, upserts, persist jobs: the
after-write step of features/writes.py sees them all) becomes one job per model and transaction
carrying the keys, chunked; torch and sentence-transformers load only in the process that embeds.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import signals

from timber_tasks.embeddings.changes import work_for
from timber_tasks.features.writes import CommittedWrites, on_commit
from timber_tasks.tasks.base import TimberTask, get_timber, timber_task

log = logging.getLogger("timber_tasks.embeddings")

_indexers: dict[tuple[int, str], Any] = {}
_lock = threading.Lock()


def indexer(name: str) -> Any:
    """This process's Indexer of a model (encoder and collection checked once, then reused)."""
    from timber_tasks.embeddings.indexing import Indexer

    timber = get_timber()
    key = (id(timber), name)
    with _lock:
        found = _indexers.get(key)
        if found is None:
            found = _indexers[key] = Indexer(timber, name)
        return found


@timber_task("timber.embeddings.embed_rows", base=TimberTask)
def embed_rows(model: str, ids: list[Any], deleted: list[Any] | None = None) -> dict[str, Any]:
    """Embed the rows with these keys (changed content only) and remove the vectors of `deleted` keys.

    The result counts embedded, unchanged, payload-only and removed points, and lists the keys whose
    content was empty (no vector) or longer than the model reads (truncated).
    """
    from timber_tasks.embeddings.indexing import merge

    job = indexer(model)
    result = job.embed_ids(ids)
    if deleted:
        merge(result, job.remove_ids(deleted))
    return dict(result)


@timber_task("timber.embeddings.sync_model", base=TimberTask)
def sync_model(model: str) -> dict[str, Any]:
    """Reconcile a whole model (after a write whose keys are unknown): changed rows embedded, orphans removed."""
    return dict(indexer(model).sync())


@timber_task("timber.embeddings.search", base=TimberTask)
def search(query: str, collection_name: str, filter_dict: dict[str, Any] | None = None, limit: int = 10,
           app: str | None = None, user_id: str | None = None) -> list[dict[str, Any]]:
    """The service's search run where the model is already loaded (the demo uses it), for `app` and `user_id`.

    A job carries no proof of who sent it: the worker applies the limits of the app and user named
    in the job. Apps search in their own process through `timber.services.vectors`.
    """
    from timber_tasks.services.vectors import VectorSearchService

    service = VectorSearchService(get_timber(), user_id=user_id)
    if app:
        service.app = app
    return service.search(query=query, collection_name=collection_name, filter_dict=filter_dict, limit=limit)


def enqueue_committed(committed: CommittedWrites) -> None:
    """The after-commit hook: one job per model and transaction (chunked), never one per row."""
    for work in work_for(committed):
        if work.whole_model:
            sync_model.delay(work.model)
        else:
            embed_rows.delay(work.model, work.written, work.deleted)


on_commit(enqueue_committed, name="embeddings")


@signals.worker_init.connect
def _check_embedding_models(sender: Any = None, **_: Any) -> None:
    """A worker that takes embedding jobs refuses to start when an embedding model is not on disk."""
    from timber_tasks.embeddings.indexing import vector_models
    from timber_tasks.errors import TimberError

    consumed = getattr(getattr(getattr(sender, "app", None), "amqp", None), "queues", None)
    selected = getattr(consumed, "consume_from", None)  # None: every queue
    if selected and "embeddings" not in selected:
        return
    try:
        vector_models(get_timber())
    except TimberError as exc:
        log.critical("this worker takes embedding jobs, but %s", exc)
        # Celery logs and swallows an Exception from a signal handler; SystemExit stops the start.
        raise SystemExit(1) from exc
