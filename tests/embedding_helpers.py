"""Shared by the embedding tests: sample research notes, users, and a store per backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from timber_tasks.stores.vectors import VectorStore
from timber_tasks.stores.vectors.embedded import EmbeddedStore
from timber_tasks.stores.vectors.qdrant import QdrantStore

BACKENDS = ["embedded", "qdrant"]

NOTES = {
    "r-chips": ("AAPL", "Apple designs its own processors for the iPhone and the Mac."),
    "r-rates": ("JPM", "The bank's net interest income rises when central banks raise rates."),
    "r-oil": ("XOM", "Crude oil prices fell as OPEC increased production."),
    "r-cars": ("TSLA", "Electric vehicle deliveries grew on strong demand in China."),
}


def make_store(kind: str, folder: Path) -> VectorStore:
    if kind == "embedded":
        return EmbeddedStore(folder / "edge")
    from qdrant_client import QdrantClient

    return QdrantStore(QdrantClient(path=str(folder / "local")))


def add_users(timber: Any, *ids: str) -> None:
    User = timber.get_model("User")
    with timber.db.session_scope() as session:
        for uid in ids:
            session.add(User(id=uid, email=f"{uid}@example.com", username=f"user_{uid}"))


def add_notes(timber: Any, user: str = "u1", notes: dict[str, tuple[str, str]] | None = None) -> None:
    Research = timber.get_model("StockResearchSession")
    with timber.db.session_scope() as session:
        for pk, (symbol, summary) in (notes or NOTES).items():
            session.add(Research(id=pk, user_id=user, symbol=symbol, analysis_type="fundamental", summary=summary))
