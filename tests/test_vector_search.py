"""Search from an app on every vector store: ranking, unified search by score, app and user limits."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from timber_tasks import initialize_timber
from timber_tasks.embeddings.encoder import DEFAULT_MODEL, get_encoder
from timber_tasks.embeddings.indexing import Indexer
from timber_tasks.errors import AccessDeniedError, NotFoundError, ValidationError
from timber_tasks.services.vectors import VectorSearchService
from timber_tasks.stores.vectors import VectorStore

from .conftest import ROOT
from .embedding_helpers import BACKENDS, add_notes, add_users, make_store

pytestmark = pytest.mark.filterwarnings("ignore:Payload indexes have no effect in the local Qdrant:UserWarning")


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    assert get_encoder(DEFAULT_MODEL).dimension == 384  # loaded once per session: get_encoder keeps it per process
    built = make_store(request.param, tmp_path)
    yield built
    built.close()


def _timber(app: str, url: str, **kw: Any) -> Any:
    return initialize_timber(app_name=app, model_config_dirs=[ROOT / "model_configs"], database_url=url, **kw)


@pytest.fixture
def grove(tmp_path: Path, store: VectorStore) -> Any:
    """A Grove Timber whose shared research notes (two users) and own research sessions are embedded."""
    timber = _timber("grove", f"sqlite:///{tmp_path / 't.db'}")
    add_users(timber, "u1", "u2")
    add_notes(timber, "u1")
    add_notes(timber, "u2", {"o-bond": ("TLT", "Treasury bond yields climbed after the inflation report.")})
    Grove = timber.get_model("ResearchSession")
    with timber.db.session_scope() as session:
        session.add(Grove(id="g-chip", user_id="u1", symbol="NVDA", notes="Chip makers ship more AI accelerators."))
    Indexer(timber, "StockResearchSession", store).sync()
    Indexer(timber, "ResearchSession", store).sync()
    return timber


def test_search_finds_the_semantically_close_row_before_unrelated_ones(grove: Any, store: VectorStore) -> None:
    service = VectorSearchService(grove, store=store)
    hits = service.search(query="petroleum output and OPEC", collection_name="stock_research_sessions", limit=3)
    assert hits[0]["id"] == "r-oil" and hits[0]["score"] > hits[1]["score"]
    assert hits[0]["payload"]["symbol"] == "XOM" and not {"content_hash", "fingerprint"} & set(hits[0]["payload"])
    merged = service.unified_search("semiconductors for artificial intelligence",
                                    ["stock_research_sessions", "research_sessions"], limit=3)
    assert merged[0]["id"] == "g-chip" and merged[0]["collection"] == "research_sessions"
    assert [h["score"] for h in merged] == sorted((h["score"] for h in merged), reverse=True)


def test_an_app_searches_its_own_and_shared_collections_only(grove: Any, store: VectorStore, tmp_path: Path) -> None:
    assert VectorSearchService(grove, store=store).collections() == ["research_sessions", "stock_research_sessions"]
    canopy = _timber("canopy", f"sqlite:///{tmp_path / 't.db'}", create_tables=False)
    service = VectorSearchService(canopy, store=store)
    assert service.collections() == ["stock_research_sessions"]
    with pytest.raises(AccessDeniedError, match=r"app 'canopy' may not search collection 'research_sessions'"):
        service.search(query="chips", collection_name="research_sessions")
    with pytest.raises(NotFoundError, match=r"no vector collection 'orders'; this app may search: stock_research"):
        service.search(query="chips", collection_name="orders")
    assert service.search(query="chips", collection_name="stock_research_sessions")  # shared: allowed


def test_a_users_search_cannot_be_widened_to_other_users(grove: Any, store: VectorStore) -> None:
    mine = VectorSearchService(grove, store=store).for_user("u1")
    hits = mine.search(query="bond yields and inflation", collection_name="stock_research_sessions", limit=10)
    assert hits and {h["payload"]["user_id"] for h in hits} == {"u1"}  # u2's bond note is not among them
    for widened in ({"user_id": "u2"}, {"user_id": ["u1", "u2"]}):
        with pytest.raises(AccessDeniedError, match=r"limited to user 'u1'"):
            mine.search(query="bonds", collection_name="stock_research_sessions", filter_dict=widened)
    narrowed = mine.search(query="bonds", collection_name="stock_research_sessions", filter_dict={"symbol": "XOM"})
    assert [h["id"] for h in narrowed] == ["r-oil"]
    with pytest.raises(ValidationError, match="query: is required"):
        mine.search(query=" ", collection_name="stock_research_sessions")
