"""The after-commit hook's plan: every write path gives one embedding job per model and transaction, chunked."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, insert, update
from sqlalchemy.dialects import sqlite

from timber_tasks import initialize_timber
from timber_tasks.embeddings.changes import EmbeddingWork, work_for
from timber_tasks.features import writes

from .conftest import ROOT
from .embedding_helpers import add_users


@pytest.fixture
def planned(tmp_path: Path) -> Iterator[tuple[Any, list[list[EmbeddingWork]]]]:
    """A Timber and, per committed transaction, the embedding work the hook plans for it."""
    timber = initialize_timber(model_config_dirs=[ROOT / "model_configs"],
                               database_url=f"sqlite:///{tmp_path / 't.db'}")
    add_users(timber, "u1")
    seen: list[list[EmbeddingWork]] = []
    writes.on_commit(lambda committed: seen.append(list(work_for(committed, chunk=500))), name="test-plan")
    yield timber, seen
    writes._commit_hooks.pop("test-plan")


def _row(n: int) -> dict[str, Any]:
    return {"id": f"r{n}", "user_id": "u1", "symbol": "AAA", "analysis_type": "a", "summary": f"note {n}"}


def test_every_write_path_plans_one_job_per_model_and_transaction(planned: tuple[Any, list[Any]]) -> None:
    timber, seen = planned
    Research = timber.get_model("StockResearchSession")
    seen.clear()
    with timber.db.session_scope() as session:  # ORM unit of work, two rows: one job
        session.add_all([Research(**_row(1)), Research(**_row(2))])
    assert seen == [[EmbeddingWork("StockResearchSession", ["r1", "r2"], [])]]
    with timber.db.session_scope() as session:  # ORM bulk: 1200 rows, chunks of 500
        session.execute(insert(Research), [_row(n) for n in range(100, 1300)])
    assert [len(w.written) for w in seen[-1]] == [500, 500, 200]
    with timber.db.session_scope() as session:  # a Core upsert, as persist jobs and market data do
        stmt = sqlite.insert(Research.__table__)
        session.execute(stmt.on_conflict_do_update(index_elements=["id"], set_={"summary": stmt.excluded.summary}),
                        [_row(1) | {"summary": "changed"}, _row(3)])
    assert seen[-1] == [EmbeddingWork("StockResearchSession", ["r1", "r3"], [])]
    with timber.db.session_scope() as session:  # a delete by key removes the vector
        session.delete(session.get(Research, "r2"))
    assert seen[-1] == [EmbeddingWork("StockResearchSession", [], ["r2"])]
    with timber.db.session_scope() as session:  # keys unknown: reconcile the model
        session.execute(update(Research).where(Research.symbol == "AAA").values(status="done"))
    assert seen[-1] == [EmbeddingWork("StockResearchSession", [], [], whole_model=True)]
    with timber.db.session_scope() as session:  # a user deleted: the database cascades to research rows
        session.execute(delete(timber.get_model("User")).where(timber.get_model("User").id == "u1"))
    assert EmbeddingWork("StockResearchSession", [], [], whole_model=True) in seen[-1]


def test_models_without_vector_search_plan_nothing(planned: tuple[Any, list[Any]]) -> None:
    timber, seen = planned
    seen.clear()
    timber.services.notifications.create("u1", "order_filled", "Order filled")
    assert seen == [[]]


def test_an_app_that_only_initializes_timber_queues_the_embedding_job_of_its_write(tmp_path: Path) -> None:
    """A fresh process, as an app is: nothing imported but initialize_timber, and its write is embedded."""
    script = """
from sqlalchemy import select
from timber_tasks import initialize_timber
from timber_tasks.jobs.tables import OutboxMessage
timber = initialize_timber()
with timber.db.session_scope() as session:
    session.add(timber.get_model("User")(id="u1", email="u1@example.com", username="user_u1"))
    session.flush()
    session.add(timber.get_model("StockResearchSession")(id="r1", user_id="u1", symbol="AAA",
                                                          analysis_type="a", summary="a note"))
with timber.db.session_scope() as session:
    print(sorted(m.task_name for m in session.scalars(select(OutboxMessage))))
"""
    env = {**os.environ, "TIMBER_DATA_DIR": str(tmp_path / "var"),
           "TIMBER_MODEL_CONFIG_DIRS": str(ROOT / "model_configs"), "PYTHONPATH": str(ROOT)}
    for name in ("DATABASE_URL", "BROKER_URL", "RESULT_BACKEND_URL", "REDIS_URL"):
        env.pop(name, None)
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    # The embedded broker keeps no unacked job, so the job waits in the outbox until a worker takes it.
    assert "timber.embeddings.embed_rows" in done.stdout, done.stdout
