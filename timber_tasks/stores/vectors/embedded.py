"""The embedded default: Qdrant Edge (the Qdrant engine in-process), one shard per collection under the data dir.

Chosen over qdrant-client's local mode by bench/embeddings.py: 5,000 x 384 points in batches of
256, Edge 5,967 points/s vs local mode 411 (14.5x) and a filtered search in 35 vs 105 ms, in the
same run (2026-12-01, a loaded 2-core box; DESIGN.md measured 28,900 vs 790). Edge runs the real
engine (payload indexes, HNSW); local mode keeps points in Python lists and ignores payload indexes.

An Edge shard may be open in one process at a time (its write-ahead log is locked), while a
worker's pool processes embed and an app searches: so every operation takes a host-wide
lock on the collection, opens the shard, works, flushes and closes it (no write-ahead log to
replay); an embedding job opens it once to write, and a second time only to keep vectors whose
content did not change.

Loading a shard rebuilds its payload indexes (~50 ms at 4,000 points, growing with the points),
too slow for a job that only asks which of its points exist and what they were written from. So
each collection lists its points with their marks (base.Marks) in a SQLite file beside the shard,
written under the same lock: a write forgets its ids before it touches the shard and lists them
again after the shard is flushed. A crash in between leaves a point unlisted, never listed with
stale marks, and an unlisted point is only written again. A list made before this file existed,
or found unreadable, is rebuilt from the shard once.
"""

from __future__ import annotations

import fcntl
import json
import logging
import re
import shutil
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
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
    VectorStoreError,
    filter_items,
)

CANONICAL_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")  # fullmatch
SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,99}$")  # a collection names a folder
META = "collection.json"  # {"dim": ..., "indexed": [...]}: read without opening the shard
POINTS = "points.sqlite3"  # the shard's point ids with their marks, read without opening the shard
PAGE = 512
ID_CHUNK = 500  # ids per SQL IN list (SQLite's variable limit is 32,766; smaller keeps statements short)

log = logging.getLogger(__name__)


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
        with self._locked(collection) as folder, self._loaded(collection, folder, write=write) as shard:
            yield shard

    @contextmanager
    def _loaded(self, collection: str, folder: Path, *, write: bool) -> Iterator[Any]:
        """The shard of a collection whose lock the caller holds."""
        from qdrant_edge import EdgeShard

        if not (folder / META).exists():
            self.require(collection)
        shard = EdgeShard.load(str(folder / "shard"))
        try:
            yield shard
            if write:
                shard.flush()
        finally:
            shard.close()

    def _listed(self, folder: Path) -> sqlite3.Connection:
        """The collection's point list (its lock held); an unreadable one is only a copy: started anew."""
        path = folder / POINTS
        try:
            return _open_list(path)
        except sqlite3.DatabaseError as exc:
            if path.is_dir() and not path.is_symlink():  # not ours to remove
                raise VectorStoreError(f"{path} is a folder where the point list belongs: move it away",
                                       collection=folder.name) from exc
            log.error("vector collection %s: point list %s is unreadable (%s); rebuilding it from the shard",
                      folder.name, path, exc)
            path.unlink(missing_ok=True)
            return _open_list(path)

    @staticmethod
    def _forget(listed: sqlite3.Connection, ids: Sequence[str]) -> None:
        with listed:  # one transaction, committed (durable) before the shard is touched
            listed.executemany("DELETE FROM points WHERE id = ?", [(i,) for i in ids])

    def _rebuild(self, collection: str, folder: Path, listed: sqlite3.Connection) -> None:
        from qdrant_edge import PayloadSelector, ScrollRequest

        with self._loaded(collection, folder, write=False) as shard, listed:
            listed.execute("DELETE FROM points")
            offset = None
            while True:
                records, offset = shard.scroll(ScrollRequest(
                    offset=offset, limit=PAGE, with_payload=PayloadSelector.Include([FINGERPRINT_KEY, SOURCE_KEY]),
                    with_vector=False))
                _list(listed, [(str(r.id), Marks.of(r.payload)) for r in records])
                if offset is None:
                    break
            listed.execute("INSERT OR REPLACE INTO state VALUES ('complete', 1)")

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
            with closing(self._listed(folder)) as listed, listed:  # an empty shard, listed whole
                listed.execute("INSERT INTO state VALUES ('complete', 1)")
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
        dim = self.dimension(collection)
        if dim is None:
            self.require(collection)
        for p in points:
            if len(p.vector) != dim:
                raise VectorStoreError(f"point {p.id} has {len(p.vector)} dimensions, the collection {dim}",
                                       collection=collection)
        if not points:
            return
        with self._locked(collection) as folder:
            if not (folder / META).exists():
                self.require(collection)  # dropped meanwhile: says so
            self._write_points(collection, folder, points)

    def _write_points(self, collection: str, folder: Path, points: Sequence[VectorPoint]) -> None:
        from qdrant_edge import Point, UpdateOperation

        ids = _canonical([p.id for p in points], collection)
        with closing(self._listed(folder)) as listed:
            self._forget(listed, ids)
            with self._loaded(collection, folder, write=True) as shard:
                for start in range(0, len(points), PAGE):
                    shard.update(UpdateOperation.upsert_points([
                        Point(pid, [float(x) for x in p.vector], dict(p.payload))
                        for pid, p in zip(ids[start:start + PAGE], points[start:start + PAGE], strict=True)]))
            with listed:  # after the flush: the list names only what the shard holds
                _list(listed, [(pid, Marks.of(p.payload)) for pid, p in zip(ids, points, strict=True)])

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        from qdrant_edge import UpdateOperation

        if not ids or self.dimension(collection) is None:
            return
        with self._locked(collection) as folder:
            if not (folder / META).exists():
                return  # dropped meanwhile
            canonical = _canonical(ids, collection)
            with closing(self._listed(folder)) as listed:
                self._forget(listed, canonical)
                with self._loaded(collection, folder, write=True) as shard:
                    shard.update(UpdateOperation.delete_points(list[Any](canonical)))

    def marks(self, collection: str, ids: Sequence[str]) -> dict[str, Marks]:
        found: dict[str, Marks] = {}
        ids = _canonical(ids, collection)
        with self._locked(collection) as folder:
            if not (folder / META).exists():
                self.require(collection)
            with closing(self._listed(folder)) as listed:
                if listed.execute("SELECT 1 FROM state WHERE key = 'complete'").fetchone() is None:
                    self._rebuild(collection, folder, listed)
                for start in range(0, len(ids), ID_CHUNK):
                    chunk = list(ids[start:start + ID_CHUNK])
                    rows = listed.execute("SELECT id, fingerprint, source FROM points WHERE id IN "
                                          f"({','.join('?' * len(chunk))})", chunk)
                    found.update((pid, Marks(fingerprint, source)) for pid, fingerprint, source in rows)
        return found

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


def _open_list(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path)
    try:
        db.execute("CREATE TABLE IF NOT EXISTS points (id TEXT PRIMARY KEY, fingerprint TEXT, source TEXT)")
        db.execute("CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value)")  # 'complete': lists every point
        db.execute("SELECT id, fingerprint, source FROM points LIMIT 0")  # tables of another shape: unreadable
        db.execute("SELECT key, value FROM state LIMIT 0")
    except sqlite3.DatabaseError:
        db.close()
        raise
    return db


def _list(listed: sqlite3.Connection, marked: list[tuple[str, Marks]]) -> None:
    listed.executemany("INSERT OR REPLACE INTO points VALUES (?, ?, ?)",
                       [(pid, m.fingerprint, m.source) for pid, m in marked])


def _canonical(ids: Sequence[str], collection: str) -> list[str]:
    """Point ids as the shard keeps them (lower-case hyphenated UUIDs): the list must name each point one way."""
    found = []
    for pid in ids:
        if isinstance(pid, str) and CANONICAL_ID.fullmatch(pid):
            found.append(pid)
            continue
        try:
            found.append(str(uuid.UUID(str(pid))))
        except ValueError:
            raise VectorStoreError(f"point id {pid!r} is not a UUID", collection=collection) from None
    return found
