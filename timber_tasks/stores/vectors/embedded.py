"""The embedded default: Qdrant Edge (the Qdrant engine in-process), one shard per collection under the data dir.

Chosen over qdrant-client's local mode by bench/embeddings.py: 5,000 x 384 points in batches of
256, Edge 5,967 points/s vs local mode 411 (14.5x) and a filtered search in 35 vs 105 ms, in the
same run (2026-12-01, a loaded 2-core box; DESIGN.md measured 28,900 vs 790). Edge runs the real
engine (payload indexes, HNSW); local mode keeps points in Python lists and ignores payload indexes.

An Edge shard may be open in one process at a time (its write-ahead log is locked), while a
worker's pool processes embed and an app searches: so every operation takes a host-wide
lock on the collection, opens the shard, works, flushes and closes it. Opening costs about
10 ms (no write-ahead log to replay); an embedding job reads once and writes once per batch.
"""

from __future__ import annotations

import fcntl
import json
import re
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from timber_tasks.stores.vectors.base import (
    FilterDict,
    Hit,
    StoredPoint,
    VectorPoint,
    VectorStore,
    VectorStoreError,
    filter_items,
)

SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,99}$")  # a collection names a folder
META = "collection.json"  # {"dim": ..., "indexed": [...]}: read without opening the shard
PAGE = 512


class EmbeddedStore(VectorStore):
    """Collections as Qdrant Edge shards in `folder/<collection>/`."""

    name = "embedded"

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def _dir(self, collection: str) -> Path:
        if not SAFE_NAME.match(collection):
            raise VectorStoreError("is not a usable collection name (letters, digits, _ . -; at most 100)",
                                   collection=collection)
        return self.folder / collection

    def _meta(self, collection: str) -> dict[str, Any] | None:
        path = self._dir(collection) / META
        if not path.exists():
            return None
        meta: dict[str, Any] = json.loads(path.read_text())
        return meta

    @contextmanager
    def _locked(self, collection: str) -> Iterator[Path]:
        folder = self._dir(collection)
        with (self.folder / f".{collection}.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
            try:
                yield folder
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @contextmanager
    def _shard(self, collection: str, *, write: bool = False) -> Iterator[Any]:
        from qdrant_edge import EdgeShard

        with self._locked(collection) as folder:
            if not (folder / META).exists():
                self.require(collection)
            shard = EdgeShard.load(str(folder / "shard"))
            try:
                yield shard
                if write:
                    shard.flush()
            finally:
                shard.close()

    def collections(self) -> list[str]:
        return sorted(p.parent.name for p in self.folder.glob(f"*/{META}"))

    def dimension(self, collection: str) -> int | None:
        meta = self._meta(collection)
        return None if meta is None else int(meta["dim"])

    def _create(self, collection: str, dim: int, indexed_fields: Sequence[str]) -> None:
        from qdrant_edge import Distance, EdgeConfig, EdgeShard, EdgeVectorParams

        with self._locked(collection) as folder:
            if (folder / META).exists():  # another process made it meanwhile
                return
            shutil.rmtree(folder, ignore_errors=True)  # a creation cut short leaves no meta: start over
            folder.mkdir(parents=True)
            # No write-ahead log: every write here ends with flush() before the shard closes, and a load
            # replays the whole log (the cost of every open grew with the collection: 106 vs 14 ms at 1k points).
            shard = EdgeShard.create(str(folder / "shard"), EdgeConfig(
                vectors=EdgeVectorParams(size=dim, distance=Distance.Cosine), wal_enabled=False))
            try:
                self._add_indexes(shard, indexed_fields)
                shard.flush()
            finally:
                shard.close()
            (folder / f"{META}.tmp").write_text(json.dumps({"dim": dim, "indexed": sorted(indexed_fields)}))
            (folder / f"{META}.tmp").rename(folder / META)  # last: its presence means the shard is whole

    def _index_fields(self, collection: str, fields: Sequence[str]) -> None:
        meta = self._meta(collection) or {}
        missing = sorted(set(fields) - set(meta.get("indexed", ())))
        if not missing:
            return
        with self._shard(collection, write=True) as shard:
            self._add_indexes(shard, missing)
        meta["indexed"] = sorted({*meta.get("indexed", ()), *missing})
        folder = self._dir(collection)
        (folder / f"{META}.tmp").write_text(json.dumps(meta))
        (folder / f"{META}.tmp").rename(folder / META)

    @staticmethod
    def _add_indexes(shard: Any, fields: Sequence[str]) -> None:
        from qdrant_edge import PayloadSchemaType, UpdateOperation

        for name in fields:
            shard.update(UpdateOperation.create_field_index(name, PayloadSchemaType.Keyword))

    def upsert(self, collection: str, points: Sequence[VectorPoint]) -> None:
        from qdrant_edge import Point, UpdateOperation

        dim = self.dimension(collection)
        if dim is None:
            self.require(collection)
        for p in points:
            if len(p.vector) != dim:
                raise VectorStoreError(f"point {p.id} has {len(p.vector)} dimensions, the collection {dim}",
                                       collection=collection)
        if not points:
            return
        with self._shard(collection, write=True) as shard:
            for start in range(0, len(points), PAGE):
                shard.update(UpdateOperation.upsert_points([
                    Point(p.id, [float(x) for x in p.vector], dict(p.payload))
                    for p in points[start:start + PAGE]]))

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        from qdrant_edge import UpdateOperation

        if not ids or self.dimension(collection) is None:
            return
        with self._shard(collection, write=True) as shard:
            shard.update(UpdateOperation.delete_points(list(ids)))

    def get(self, collection: str, ids: Sequence[str], *, with_vectors: bool = False) -> dict[str, StoredPoint]:
        if not ids:
            self.require(collection)
            return {}
        with self._shard(collection) as shard:
            records = shard.retrieve(list(ids), with_payload=True, with_vector=with_vectors)
        return {str(r.id): StoredPoint(str(r.id), dict(r.payload or {}),
                                       [float(x) for x in r.vector] if with_vectors else None) for r in records}

    def search(self, collection: str, vector: Sequence[float], filter_dict: FilterDict | None = None,
               limit: int = 10) -> list[Hit]:
        from qdrant_edge import Query, SearchRequest

        query_filter = self._filter(filter_dict, collection)
        with self._shard(collection) as shard:
            points = shard.search(SearchRequest(query=Query.Nearest([float(x) for x in vector]), limit=limit,
                                                filter=query_filter, with_payload=True))
        return [Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in points]

    def scroll(self, collection: str, filter_dict: FilterDict | None = None) -> Iterator[StoredPoint]:
        from qdrant_edge import ScrollRequest

        query_filter = self._filter(filter_dict, collection)
        found: list[StoredPoint] = []
        with self._shard(collection) as shard:  # read under one lock, then hand out: the shard closes at once
            offset = None
            while True:
                records, offset = shard.scroll(ScrollRequest(offset=offset, limit=PAGE, filter=query_filter,
                                                             with_payload=True, with_vector=False))
                found.extend(StoredPoint(str(r.id), dict(r.payload or {})) for r in records)
                if offset is None:
                    break
        yield from found

    def count(self, collection: str, filter_dict: FilterDict | None = None) -> int:
        from qdrant_edge import CountRequest

        query_filter = self._filter(filter_dict, collection)
        with self._shard(collection) as shard:
            return int(shard.count(CountRequest(exact=True, filter=query_filter)))

    def drop_collection(self, collection: str) -> None:
        with self._locked(collection) as folder:
            shutil.rmtree(folder, ignore_errors=True)

    @staticmethod
    def _filter(filter_dict: FilterDict | None, collection: str) -> Any:
        from qdrant_edge import FieldCondition, Filter, MatchAny, MatchValue

        items = filter_items(filter_dict, collection)
        if not items:
            return None
        return Filter(must=[FieldCondition(key, match=MatchValue(values[0]) if len(values) == 1
                                           else MatchAny(values)) for key, values in items])
