"""The Qdrant server through qdrant-client (QDRANT_URL); the same code drives qdrant-client's local mode."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from timber_tasks.stores.vectors.base import (
    FINGERPRINT_KEY,
    SOURCE_KEY,
    FilterDict,
    Hit,
    Marks,
    StoredPoint,
    VectorPoint,
    VectorStore,
    filter_items,
)

PAGE = 256  # points per scroll page and per upsert request


class QdrantStore(VectorStore):
    """One qdrant-client; `QdrantStore.connect(url)` for a server, `QdrantStore(QdrantClient(path=...))` locally."""

    name = "qdrant"

    def __init__(self, client: Any) -> None:
        self.client = client

    @classmethod
    def connect(cls, url: str, api_key: str | None = None, timeout: float = 30) -> QdrantStore:
        from qdrant_client import QdrantClient

        # No version probe at construction: it runs in a thread and only warns; a wrong server fails the first call.
        return cls(QdrantClient(url=url, api_key=api_key, timeout=int(timeout), check_compatibility=False))

    def collections(self) -> list[str]:
        return sorted(c.name for c in self.client.get_collections().collections)

    def dimension(self, collection: str) -> int | None:
        if not self.client.collection_exists(collection):
            return None
        vectors = self.client.get_collection(collection).config.params.vectors
        return int(vectors.size)

    def _create(self, collection: str, dim: int, indexed_fields: Sequence[str]) -> None:
        from qdrant_client import models

        self.client.create_collection(collection, vectors_config=models.VectorParams(
            size=dim, distance=models.Distance.COSINE))
        self._index_fields(collection, indexed_fields)

    def _index_fields(self, collection: str, fields: Sequence[str]) -> None:
        from qdrant_client import models

        info = self.client.get_collection(collection)
        present = set(info.payload_schema or {})
        for name in fields:
            if name not in present:
                self.client.create_payload_index(collection, name, field_schema=models.PayloadSchemaType.KEYWORD)

    def upsert(self, collection: str, points: Sequence[VectorPoint]) -> None:
        from qdrant_client import models

        self.require(collection)
        for start in range(0, len(points), PAGE):
            self.client.upsert(collection, wait=True, points=[
                models.PointStruct(id=p.id, vector=list(p.vector), payload=dict(p.payload))
                for p in points[start:start + PAGE]])

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        from qdrant_client import models

        if ids and self.dimension(collection) is not None:
            self.client.delete(collection, points_selector=models.PointIdsList(points=list(ids)), wait=True)

    def get(self, collection: str, ids: Sequence[str], *, with_vectors: bool = False) -> dict[str, StoredPoint]:
        self.require(collection)
        found: dict[str, StoredPoint] = {}
        for start in range(0, len(ids), PAGE):
            for record in self.client.retrieve(collection, list(ids[start:start + PAGE]), with_payload=True,
                                               with_vectors=with_vectors):
                found[str(record.id)] = StoredPoint(str(record.id), dict(record.payload or {}),
                                                    list(record.vector) if with_vectors else None)
        return found

    def marks(self, collection: str, ids: Sequence[str]) -> dict[str, Marks]:
        self.require(collection)
        found: dict[str, Marks] = {}
        for start in range(0, len(ids), PAGE):  # only the two payload keys travel
            for record in self.client.retrieve(collection, list(ids[start:start + PAGE]),
                                               with_payload=[FINGERPRINT_KEY, SOURCE_KEY], with_vectors=False):
                found[str(record.id)] = Marks.of(record.payload)
        return found

    def search(self, collection: str, vector: Sequence[float], filter_dict: FilterDict | None = None,
               limit: int = 10) -> list[Hit]:
        self.require(collection)
        response = self.client.query_points(collection, query=list(vector), query_filter=self._filter(
            filter_dict, collection), limit=limit, with_payload=True)
        return [Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in response.points]

    def scroll(self, collection: str, filter_dict: FilterDict | None = None) -> Iterator[StoredPoint]:
        self.require(collection)
        query = self._filter(filter_dict, collection)
        offset = None
        while True:
            records, offset = self.client.scroll(collection, scroll_filter=query, limit=PAGE, offset=offset,
                                                 with_payload=True, with_vectors=False)
            for record in records:
                yield StoredPoint(str(record.id), dict(record.payload or {}))
            if offset is None:
                return

    def count(self, collection: str, filter_dict: FilterDict | None = None) -> int:
        self.require(collection)
        return int(self.client.count(collection, count_filter=self._filter(filter_dict, collection), exact=True).count)

    def drop_collection(self, collection: str) -> None:
        if self.client.collection_exists(collection):
            self.client.delete_collection(collection)

    def close(self) -> None:
        self.client.close()

    @staticmethod
    def _filter(filter_dict: FilterDict | None, collection: str) -> Any:
        from qdrant_client import models

        items = filter_items(filter_dict, collection)
        if not items:
            return None
        must: list[Any] = []
        for key, values in items:
            match = models.MatchValue(value=values[0]) if len(values) == 1 else models.MatchAny(any=values)
            must.append(models.FieldCondition(key=key, match=match))
        return models.Filter(must=must)

