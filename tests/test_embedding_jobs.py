"""Embedding jobs on real workers (embedded platform, PostgreSQL + Redis): every write path, then search."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import insert

from timber_tasks.jobs import dead_letters
from timber_tasks.services.vectors import VectorSearchService

from .embedding_helpers import NOTES, add_notes, add_users
from .platforms import wait_for

COLLECTION = "stock_research_sessions"


def _pks(service: VectorSearchService, query: str, **kw: Any) -> list[Any]:
    return [h["id"] for h in service.search(query=query, collection_name=COLLECTION, limit=10, **kw)]


def _count(platform: Any) -> int:
    from timber_tasks.stores.vectors import vector_store

    store = vector_store(platform.timber.settings)
    return store.count(COLLECTION) if COLLECTION in store.collections() else 0


@pytest.mark.parametrize("platform", ["embedded", "redis"], indirect=True)
def test_every_write_path_is_embedded_by_the_worker_and_found_by_search(platform: Any) -> None:
    platform.start_worker("persistence,embeddings", concurrency=1)
    timber = platform.timber
    add_users(timber, "u1", "u2")
    add_notes(timber)  # ORM unit of work: one job for the four rows
    Research = timber.get_model("StockResearchSession")
    with timber.db.session_scope() as session:  # ORM bulk insert
        session.execute(insert(Research), [
            {"id": f"bulk-{n}", "user_id": "u2", "symbol": "BULK", "analysis_type": "technical",
             "summary": f"Moving averages crossed on day {n}."} for n in range(30)])
    persist = platform.task("timber.persistence.persist")
    persist.delay("StockResearchSession", "create", {
        "id": "via-job", "user_id": "u2", "symbol": "NVDA", "analysis_type": "fundamental",
        "summary": "Graphics cards for AI data centres sold out."}, idempotency_key="emb-job").get(timeout=60)
    wait_for(lambda: _count(platform) == 35, 120, "35 vectors")
    service = VectorSearchService(timber)
    assert _pks(service, "who designs chips for phones and laptops")[0] == "r-chips"
    assert _pks(service, "GPU demand from artificial intelligence")[0] == "via-job"
    assert _pks(service, "oil supply", filter_dict={"user_id": "u2"})[0].startswith(("bulk-", "via-job"))

    embed = platform.task("timber.embeddings.embed_rows")
    again = embed.delay("StockResearchSession", list(NOTES)).get(timeout=60)  # a retry of the first job
    assert (again["embedded"], again["unchanged"]) == (0, 4) and _count(platform) == 35

    with timber.db.session_scope() as session:  # an update re-embeds, a delete removes
        session.get(Research, "r-oil").summary = "Graphics processors for machine learning."
        session.delete(session.get(Research, "r-cars"))
    wait_for(lambda: _count(platform) == 34, 60, "the deleted row's vector to go")
    wait_for(lambda: _pks(service, "GPU for machine learning")[:2] in (["r-oil", "via-job"], ["via-job", "r-oil"]),
             60, "the updated row to be re-embedded")


@pytest.mark.parametrize("platform", ["embedded"], indirect=True)
def test_a_bad_embedding_job_lands_in_the_dead_letters_and_the_worker_goes_on(platform: Any) -> None:
    platform.start_worker("embeddings", concurrency=1)
    embed = platform.task("timber.embeddings.embed_rows")
    bad = embed.delay("Notification", ["n1"])
    with pytest.raises(Exception, match=r"Notification: has no vector_search block enabled"):
        bad.get(timeout=60)
    with pytest.raises(Exception, match=r"model 'Nope' is not registered"):
        embed.delay("Nope", ["x"]).get(timeout=60)
    letters = {(d.task_name, d.error_type) for d in dead_letters.list_letters(platform.timber.db)}
    assert ("timber.embeddings.embed_rows", "EmbeddingError") in letters
    assert ("timber.embeddings.embed_rows", "ModelNotFoundError") in letters
    add_users(platform.timber, "u1")
    add_notes(platform.timber)
    wait_for(lambda: _count(platform) == 4, 120, "the next job to be embedded by the same worker")


@pytest.mark.parametrize("platform", ["embedded"], indirect=True)
def test_a_worker_for_embeddings_refuses_to_start_when_the_embedding_model_is_not_on_disk(
        platform: Any, write_models: Any) -> None:
    folder = write_models({"notes.yaml": """
        version: "1"
        models:
          - name: Note
            table_name: notes
            vector_search: {enabled: true, content_field: body, embedding_model: BAAI/bge-small-en-v1.5}
            columns:
              - {name: id, type: String(36), primary_key: true}
              - {name: body, type: Text}
        """})
    worker = platform.start_worker("embeddings", extra_env={"TIMBER_MODEL_CONFIG_DIRS": str(folder)}, ready=False)
    assert worker.wait(120) != 0
    log = platform.log_of(worker)
    assert "model 'Note': embedding_model 'BAAI/bge-small-en-v1.5' is not available locally" in log, log
    assert "never downloaded" in log and " ready." not in log
    other = platform.start_worker("persistence", extra_env={"TIMBER_MODEL_CONFIG_DIRS": str(folder)})
    assert other.poll() is None  # a worker that takes no embedding job starts
