"""Embedding rows with the real model into every vector store: dedup, skips, updates, deletes, bad input."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from timber_tasks import initialize_timber
from timber_tasks.embeddings.encoder import DEFAULT_MODEL, get_encoder, resolve_model_path
from timber_tasks.embeddings.indexing import POINT_NAMESPACE, EmbeddingError, Indexer, point_id
from timber_tasks.errors import ConfigError, ModelConfigError
from timber_tasks.stores.vectors import Marks, VectorStore, VectorStoreError
from timber_tasks.stores.vectors.embedded import POINTS, EmbeddedStore

from .conftest import ROOT
from .embedding_helpers import BACKENDS, NOTES, add_notes, add_users, make_store

pytestmark = pytest.mark.filterwarnings("ignore:Payload indexes have no effect in the local Qdrant:UserWarning")


@pytest.fixture(scope="session")
def encoder() -> Any:
    """The real all-MiniLM-L6-v2, loaded once for the whole test session (get_encoder keeps it per process)."""
    loaded = get_encoder(DEFAULT_MODEL)
    assert loaded.dimension == 384
    return loaded


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path, encoder: Any) -> Iterator[VectorStore]:
    built = make_store(request.param, tmp_path)
    yield built
    built.close()


@pytest.fixture
def timber(tmp_path: Path) -> Any:
    t = initialize_timber(model_config_dirs=[ROOT / "model_configs"], database_url=f"sqlite:///{tmp_path / 't.db'}")
    add_users(t, "u1", "u2")
    return t


def test_rows_are_embedded_once_and_a_repeat_skips_unchanged_content(timber: Any, store: VectorStore) -> None:
    add_notes(timber)
    index = Indexer(timber, "StockResearchSession", store)
    first = index.embed_ids(list(NOTES))
    assert (first["embedded"], first["unchanged"], first["empty"]) == (4, 0, [])
    again = index.embed_ids(list(NOTES))  # a retry or redelivery of the same job
    assert (again["embedded"], again["unchanged"]) == (0, 4)
    assert store.count("stock_research_sessions") == 4  # deterministic ids: no duplicate
    point = store.get("stock_research_sessions", [point_id("StockResearchSession", "r-oil")])
    payload = next(iter(point.values())).payload
    assert payload["pk"] == "r-oil" and payload["user_id"] == "u1" and payload["app"] == "shared"
    assert payload["symbol"] == "XOM" and payload["analysis_type"] == "fundamental"
    assert "summary" not in payload and "crude" not in str(payload).lower()  # ids and metadata, not content


def test_point_ids_are_uuid5_of_model_and_key() -> None:
    for pk in ("r-oil", 42, "é✓", "x" * 300):
        assert point_id("StockResearchSession", pk) == str(uuid.uuid5(POINT_NAMESPACE, f"StockResearchSession:{pk}"))


def test_an_embedded_store_that_lost_its_point_list_re_embeds_nothing(timber: Any, tmp_path: Path) -> None:
    add_notes(timber)
    store = make_store("embedded", tmp_path)
    index = Indexer(timber, "StockResearchSession", store)
    index.embed_ids(list(NOTES))
    assert isinstance(store, EmbeddedStore)
    (store.folder / "stock_research_sessions" / POINTS).unlink()  # as a collection made before the list existed
    again = index.embed_ids(list(NOTES))
    assert (again["embedded"], again["unchanged"], again["payload_only"]) == (0, 4, 0)


def test_a_reindex_mends_an_embedded_point_list_out_of_step_with_a_restored_shard(timber: Any, tmp_path: Path) -> None:
    add_notes(timber, notes={"r-oil": NOTES["r-oil"]})
    store = make_store("embedded", tmp_path)
    assert isinstance(store, EmbeddedStore)
    index = Indexer(timber, "StockResearchSession", store)
    index.embed_ids(["r-oil"])
    shard = store.folder / "stock_research_sessions" / "shard"
    shutil.copytree(shard, tmp_path / "backup")  # a backup of the shard alone
    add_notes(timber, notes={"r-cars": NOTES["r-cars"]})
    index.embed_ids(["r-cars"])
    shutil.rmtree(shard)
    shutil.copytree(tmp_path / "backup", shard)  # restored: r-cars' point is gone, the list still names it
    assert store.count("stock_research_sessions") == 1
    assert index.embed_ids(["r-cars"])["unchanged"] == 1  # a job trusts the list (the README says so)
    result = index.sync()
    assert (result["embedded"], result["unchanged"]) == (1, 1) and store.count("stock_research_sessions") == 2
    points = {p.id: Marks.of(p.payload) for p in store.scroll("stock_research_sessions")}
    assert store.marks("stock_research_sessions", list(points)) == points  # the list agrees with the shard again


def test_a_reindex_keeps_the_point_of_a_row_made_again_while_it_read_the_table(
        timber: Any, store: VectorStore, monkeypatch: pytest.MonkeyPatch) -> None:
    add_notes(timber)
    index = Indexer(timber, "StockResearchSession", store)
    index.embed_ids(list(NOTES))
    Research = timber.get_model("StockResearchSession")
    with timber.db.session_scope() as session:  # deleted: its job has not run yet
        session.delete(session.get(Research, "r-oil"))
    embed_page = Indexer.embed_rows
    worker = Indexer(timber, "StockResearchSession", store)

    def page_then_made_again(self: Indexer, rows: list[Any], marks: Any = None) -> dict[str, Any]:
        result = embed_page(self, rows, marks)
        if self is index:
            add_notes(timber, notes={"r-oil": NOTES["r-oil"]})  # made again after the table was read,
            worker.embed_ids(["r-oil"])  # and embedded by a worker
        return result

    monkeypatch.setattr(Indexer, "embed_rows", page_then_made_again)
    assert index.sync()["removed"] == 0
    assert store.count("stock_research_sessions") == 4


def test_an_update_re_embeds_a_metadata_change_keeps_the_vector_and_a_delete_removes(
        timber: Any, store: VectorStore, encoder: Any) -> None:
    add_notes(timber)
    index = Indexer(timber, "StockResearchSession", store)
    index.embed_ids(list(NOTES))
    Research = timber.get_model("StockResearchSession")
    with timber.db.session_scope() as session:
        session.get(Research, "r-oil").summary = "Smartphone chips and laptop processors."
        session.get(Research, "r-cars").symbol = "TSLA.X"
    result = index.embed_ids(["r-oil", "r-cars"])
    assert (result["embedded"], result["payload_only"]) == (1, 1)
    query = encoder.encode(["who makes processors for phones"])[0]
    top = [h.payload["pk"] for h in store.search("stock_research_sessions", query, limit=2)]
    assert set(top) == {"r-oil", "r-chips"}
    with timber.db.session_scope() as session:
        session.delete(session.get(Research, "r-oil"))
    assert index.embed_ids(["r-oil"])["removed"] == 1  # the row is gone: so is its vector
    assert store.count("stock_research_sessions") == 3


def test_empty_and_over_long_content_are_said_in_the_result(timber: Any, store: VectorStore) -> None:
    long_text = "Revenue grew in every segment this quarter. " * 200
    add_notes(timber, notes={"r-empty": ("AAPL", "   "), "r-long": ("AAPL", long_text), "r-ok": ("AAPL", "fine")})
    result = Indexer(timber, "StockResearchSession", store).embed_ids(["r-empty", "r-long", "r-ok"])
    assert result["empty"] == ["r-empty"] and result["truncated"] == ["r-long"] and result["embedded"] == 2
    assert store.count("stock_research_sessions") == 2


def test_sync_embeds_the_table_and_removes_orphans(timber: Any, store: VectorStore) -> None:
    add_notes(timber)
    index = Indexer(timber, "StockResearchSession", store)
    index.embed_ids(list(NOTES))
    Research = timber.get_model("StockResearchSession")
    with timber.db.session_scope() as session:  # a bulk delete of two rows
        session.query(Research).filter(Research.symbol.in_(["AAPL", "JPM"])).delete()
    progress: list[tuple[int, int]] = []
    result = index.sync(lambda done, total: progress.append((done, total)))
    assert (result["unchanged"], result["removed"]) == (2, 2) and progress[-1] == (2, 2)
    assert sorted(p.payload["pk"] for p in store.scroll("stock_research_sessions")) == ["r-cars", "r-oil"]


def test_a_model_without_vector_search_and_a_wrong_dimension_are_clear_errors(timber: Any, store: VectorStore) -> None:
    with pytest.raises(EmbeddingError, match=r"Notification: has no vector_search block enabled"):
        Indexer(timber, "Notification", store)
    store.ensure_collection("stock_research_sessions", 8)
    with pytest.raises(VectorStoreError, match=r"holds 8-dimensional vectors, the embedding model gives 384"):
        Indexer(timber, "StockResearchSession", store)


def test_an_embedding_model_not_on_disk_is_a_config_error_saying_how_to_provide_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model 'Notes': embedding_model 'BAAI/bge-small-en-v1.5' is not "
                                          r"available locally.*never downloaded.*folder"):
        resolve_model_path("BAAI/bge-small-en-v1.5", model="Notes")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"holds no sentence-transformers model"):
        resolve_model_path(str(tmp_path / "empty"))
    assert (resolve_model_path(DEFAULT_MODEL) / "modules.json").exists()


NOTE_MODEL = """
    version: "1"
    models:
      - name: Note
        table_name: notes
        vector_search: {enabled: true, content_field: body, metadata_fields: [owner, symbol]}
        columns:
          - {name: id, type: String(36), primary_key: true}
          - {name: body, type: Text}
          - {name: owner, type: String(36)}
          - {name: symbol, type: String(10)}
"""
OWNER_IS_THE_USER = """
        gdpr:
          enabled: true
          user_id_field: owner
          export_fields: [body]
          purpose: research notes
          legal_basis: contract
          retention: while the account exists
          recipients: [Grove]
          source: written by the user
"""


def test_a_metadata_field_that_becomes_the_user_field_rewrites_the_points(
        tmp_path: Path, write_models: Any, store: VectorStore) -> None:
    """The column was in the payload already; its new role (user_id) must still change every fingerprint."""
    found = []
    with_gdpr = NOTE_MODEL.replace("        columns:", OWNER_IS_THE_USER.rstrip("\n") + "\n        columns:")
    for yaml in (NOTE_MODEL, with_gdpr):
        t = initialize_timber(model_config_dirs=[write_models({"notes.yaml": yaml})],
                              database_url=f"sqlite:///{tmp_path / f'n{len(found)}.db'}")
        Note = t.get_model("Note")
        with t.db.session_scope() as session:
            session.add(Note(id="n1", body="Chips for phones.", owner="u1", symbol="AAPL"))
        index = Indexer(t, "Note", store)
        result = index.embed_ids(["n1"])
        found.append((result["embedded"], result["payload_only"], index.vm.user_field))
        t.close()
    assert found == [(1, 0, None), (0, 1, "owner")]  # the vector kept, the payload rewritten with user_id
    payload = next(iter(store.get("notes", [point_id("Note", "n1")]).values())).payload
    assert payload["user_id"] == "u1"


def test_a_yaml_that_puts_an_encrypted_field_in_the_payload_is_refused(
        tmp_path: Path, write_models: Any, store: VectorStore) -> None:
    folder = write_models({"notes.yaml": """
        version: "1"
        models:
          - name: Note
            table_name: notes
            encryption: {enabled: true, fields: [secret]}
            vector_search: {enabled: true, content_field: body, metadata_fields: [secret], int8: true}
            columns:
              - {name: id, type: String(36), primary_key: true}
              - {name: body, type: Text}
              - {name: secret, type: Text}
        """})
    t = initialize_timber(model_config_dirs=[folder], database_url=f"sqlite:///{tmp_path / 'n.db'}")
    with pytest.raises(ModelConfigError, match=r"model 'Note'.*metadata_fields \['secret'\] are encrypted"):
        Indexer(t, "Note", store)
