"""The vector store: points whose payload `user_id` is the subject, in every collection."""

from __future__ import annotations

from typing import Any, Protocol

from timber_tasks.gdpr.stores.base import ExportSink, PersonalDataStore, Progress
from timber_tasks.gdpr.subject import Subject
from timber_tasks.stores.vectors import USER_KEY, vector_store

PAYLOAD_KEY = USER_KEY


class VectorIndex(Protocol):
    def collections(self) -> list[str]: ...
    def scroll(self, collection: str, filter_dict: dict[str, Any]) -> Any: ...
    def count(self, collection: str, filter_dict: dict[str, Any]) -> int: ...
    def delete_where(self, collection: str, filter_dict: dict[str, Any]) -> int: ...


def open_vector_index(timber: Any) -> VectorIndex:
    """This process's vector store for the Timber's settings (QDRANT_URL, else the embedded store)."""
    index: VectorIndex = vector_store(timber.settings)
    return index


def _point(point: Any) -> dict[str, Any]:
    """A point as exported: objects with .id/.payload, or (id, payload) pairs."""
    point_id, payload = (point.id, point.payload) if hasattr(point, "payload") else point
    return {"id": str(point_id), "payload": payload}


class VectorStore(PersonalDataStore):
    name = "vectors"

    def __init__(self, timber: Any, index: VectorIndex | None = None) -> None:
        super().__init__(timber)
        self.index: VectorIndex = index if index is not None else open_vector_index(timber)

    def _filter(self, subject: Subject) -> dict[str, Any]:
        return {PAYLOAD_KEY: subject.user_id}

    def export(self, subject: Subject, sink: ExportSink, progress: Progress | None = None) -> dict[str, int]:
        counts = {}
        for collection in self.index.collections():
            total = self.index.count(collection, self._filter(subject))
            if not total:
                continue
            rows = (_point(p) for p in self.index.scroll(collection, self._filter(subject)))
            label = f"vectors.{collection}"
            counts[label] = sink.add_part(label, rows, csv_fields=["id", "payload"],
                                          info={"purpose": "semantic search over the subject's texts"},
                                          total=total)
        return counts

    def erase(self, subject: Subject) -> int:
        return sum(self.index.delete_where(c, self._filter(subject)) for c in self.index.collections())

    def residue(self, subject: Subject) -> dict[str, int]:
        found = {f"vectors:{c}": self.index.count(c, self._filter(subject)) for c in self.index.collections()}
        return {k: n for k, n in found.items() if n}
