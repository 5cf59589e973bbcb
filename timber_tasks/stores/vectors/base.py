"""The vector-store interface: named collections of points (id, vector, payload), filtered by payload equality.

A filter_dict is `{field: value}` or `{field: [value, ...]}` (any of them); every entry must hold,
so a caller adding keys can only narrow a search, never widen it. The owner of a point is the
payload key `user_id`, its app is `app` (the GDPR jobs find a user's vectors by them).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from timber_tasks.errors import TimberError

USER_KEY = "user_id"
APP_KEY = "app"
# Two payload keys that marks() answers for many points at once, what a job compares to skip work:
# a fingerprint of everything the point is made of (it would be written the same) and of what its
# vector was computed from (the vector can be kept). Their values are the writer's to choose.
FINGERPRINT_KEY = "fingerprint"
SOURCE_KEY = "content_hash"
FilterDict = Mapping[str, Any]


class VectorStoreError(TimberError):
    """Raised when a collection is missing, has another dimension, or a point or filter is malformed."""

    def __init__(self, message: str, *, collection: str | None = None) -> None:
        self.collection = collection
        self.message = message
        super().__init__(f"vector collection {collection!r}: {message}" if collection else message)


@dataclass(frozen=True)
class VectorPoint:
    """A point to write: a string id (a UUID), its vector and its payload."""

    id: str
    vector: Sequence[float]
    payload: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StoredPoint:
    """A point read back: id and payload, the vector only when asked for."""

    id: str
    payload: dict[str, Any]
    vector: list[float] | None = None


@dataclass(frozen=True)
class Marks:
    """What a stored point was written from: its payload's FINGERPRINT_KEY and SOURCE_KEY (None when absent)."""

    fingerprint: str | None
    source: str | None

    @classmethod
    def of(cls, payload: Mapping[str, Any] | None) -> Marks:
        payload = payload or {}
        fingerprint, source = payload.get(FINGERPRINT_KEY), payload.get(SOURCE_KEY)
        return cls(None if fingerprint is None else str(fingerprint), None if source is None else str(source))


@dataclass(frozen=True)
class Hit:
    """One search result, best first: cosine similarity (higher is closer)."""

    id: str
    score: float
    payload: dict[str, Any]


class VectorStore(ABC):
    """Collections of points with cosine distance and keyword payload indexes."""

    name = "?"

    @abstractmethod
    def collections(self) -> list[str]:
        """The names of every collection, sorted."""

    @abstractmethod
    def dimension(self, collection: str) -> int | None:
        """The vector size of a collection; None when it does not exist."""

    @abstractmethod
    def _create(self, collection: str, dim: int, indexed_fields: Sequence[str]) -> None:
        """Create the collection with payload indexes on the fields (called only when it is missing)."""

    @abstractmethod
    def _index_fields(self, collection: str, fields: Sequence[str]) -> None:
        """Add keyword payload indexes to an existing collection (idempotent)."""

    @abstractmethod
    def upsert(self, collection: str, points: Sequence[VectorPoint]) -> None:
        """Write the points; an existing id is replaced (so a repeated write never duplicates)."""

    @abstractmethod
    def delete(self, collection: str, ids: Sequence[str]) -> None:
        """Remove the points with these ids; unknown ids are ignored."""

    @abstractmethod
    def get(self, collection: str, ids: Sequence[str], *, with_vectors: bool = False) -> dict[str, StoredPoint]:
        """The points among ids that exist, by id."""

    @abstractmethod
    def search(self, collection: str, vector: Sequence[float], filter_dict: FilterDict | None = None,
               limit: int = 10) -> list[Hit]:
        """The nearest points that match the filter, best first."""

    @abstractmethod
    def scroll(self, collection: str, filter_dict: FilterDict | None = None) -> Iterator[StoredPoint]:
        """Every point that matches the filter (id and payload), in pages."""

    @abstractmethod
    def count(self, collection: str, filter_dict: FilterDict | None = None) -> int:
        """How many points match the filter (exact)."""

    @abstractmethod
    def drop_collection(self, collection: str) -> None:
        """Remove a collection and its points (no error when missing)."""

    def marks(self, collection: str, ids: Sequence[str]) -> dict[str, Marks]:
        """The marks of the points among ids that exist, by id.

        This default reads whole points; backends override it to read less.
        """
        return {pid: Marks.of(p.payload) for pid, p in self.get(collection, ids).items()}

    def close(self) -> None:  # noqa: B027 - most backends hold nothing to release
        """Release files and connections."""

    # -- shared behaviour -------------------------------------------------------------------

    def ensure_collection(self, name: str, dim: int, indexed_fields: Iterable[str] = ()) -> None:
        """Create the collection if missing; refuse one that exists with another vector size."""
        fields = sorted({USER_KEY, APP_KEY, *indexed_fields})
        existing = self.dimension(name)
        if existing is None:
            self._create(name, dim, fields)
        elif existing != dim:
            raise VectorStoreError(f"holds {existing}-dimensional vectors, the embedding model gives {dim}: "
                                   "drop it and reindex (`timber-tasks vectors reindex MODEL --drop`) or "
                                   "configure the model that built it", collection=name)
        else:
            self._index_fields(name, fields)

    def delete_where(self, collection: str, filter_dict: FilterDict) -> int:
        """Remove every point matching a non-empty filter; returns how many went."""
        if not filter_dict:
            raise VectorStoreError("delete_where needs a filter: an empty one would remove every point "
                                   "(use drop_collection for that)", collection=collection)
        ids = [p.id for p in self.scroll(collection, filter_dict)]
        for start in range(0, len(ids), 1000):
            self.delete(collection, ids[start:start + 1000])
        return len(ids)

    def require(self, collection: str) -> None:
        if self.dimension(collection) is None:
            known = ", ".join(self.collections()) or "none"
            raise VectorStoreError(f"no such collection (known: {known})", collection=collection)


def filter_items(filter_dict: FilterDict | None, collection: str | None = None) -> list[tuple[str, list[Any]]]:
    """The filter as (field, allowed values) pairs; values must be str, int or bool."""
    items: list[tuple[str, list[Any]]] = []
    for key, value in (filter_dict or {}).items():
        values = list(value) if isinstance(value, list | tuple | set | frozenset) else [value]
        if not values:
            raise VectorStoreError(f"filter {key!r} has an empty list: it would match nothing",
                                   collection=collection)
        for v in values:
            if not isinstance(v, str | int | bool):
                raise VectorStoreError(f"filter {key!r}: {v!r} is not a str, int or bool value",
                                       collection=collection)
        items.append((str(key), values))
    return items
