"""One contract for every vector store: Qdrant Edge (the embedded default) and qdrant-client (local mode here)."""

from __future__ import annotations

import logging
import multiprocessing
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from timber_tasks.settings import Settings
from timber_tasks.stores.vectors import (
    FINGERPRINT_KEY,
    SOURCE_KEY,
    Marks,
    VectorPoint,
    VectorStore,
    VectorStoreError,
    open_vector_store,
)
from timber_tasks.stores.vectors.embedded import POINTS, EmbeddedStore
from timber_tasks.stores.vectors.qdrant import QdrantStore

# Local mode ignores payload indexes (a server builds them) and says so once.
pytestmark = pytest.mark.filterwarnings("ignore:Payload indexes have no effect in the local Qdrant:UserWarning")


def make_store(kind: str, folder: Path) -> VectorStore:
    if kind == "embedded":
        return EmbeddedStore(folder / "edge")
    from qdrant_client import QdrantClient

    return QdrantStore(QdrantClient(path=str(folder / "local")))  # the server's code path, no server needed


@pytest.fixture(params=["embedded", "qdrant"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    built = make_store(request.param, tmp_path)
    yield built
    built.close()


def pid(n: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"p{n}"))


def points() -> list[VectorPoint]:
    return [VectorPoint(pid(1), [1, 0, 0], {"user_id": "u1", "app": "grove", "symbol": "AAPL", "pk": "a"}),
            VectorPoint(pid(2), [0.9, 0.1, 0], {"user_id": "u1", "app": "grove", "symbol": "MSFT", "pk": "b"}),
            VectorPoint(pid(3), [0, 1, 0], {"user_id": "u2", "app": "grove", "symbol": "AAPL", "pk": "c"}),
            VectorPoint(pid(4), [0, 0, 1], {"user_id": "u2", "app": "canopy", "symbol": "TSLA", "pk": "d"})]


def test_every_store_creates_searches_filters_counts_and_scrolls(store: VectorStore) -> None:
    assert store.collections() == []
    store.ensure_collection("notes", 3, ["symbol"])
    store.ensure_collection("notes", 3, ["symbol", "pk"])  # again, with one more index: no error
    store.upsert("notes", points())
    assert store.collections() == ["notes"] and store.dimension("notes") == 3
    hits = store.search("notes", [1, 0, 0], limit=2)
    assert [h.id for h in hits] == [pid(1), pid(2)] and hits[0].score > hits[1].score
    assert hits[0].payload["pk"] == "a"
    assert [h.payload["pk"] for h in store.search("notes", [0, 1, 0.2], {"user_id": "u2"}, limit=5)] == ["c", "d"]
    assert [h.payload["pk"] for h in store.search("notes", [1, 0, 0], {"user_id": "u2", "symbol": "AAPL"})] == ["c"]
    assert store.count("notes") == 4 and store.count("notes", {"symbol": ["AAPL", "TSLA"]}) == 3
    assert sorted(p.payload["pk"] for p in store.scroll("notes", {"app": "grove"})) == ["a", "b", "c"]
    got = store.get("notes", [pid(3), pid(99)], with_vectors=True)
    assert list(got) == [pid(3)] and got[pid(3)].vector == pytest.approx([0, 1, 0])


def test_an_upsert_of_the_same_id_replaces_and_deletes_remove(store: VectorStore) -> None:
    store.ensure_collection("notes", 3)
    store.upsert("notes", points())
    store.upsert("notes", [VectorPoint(pid(1), [0, 0, 1], {"user_id": "u9", "pk": "a2"})])
    assert store.count("notes") == 4 and store.get("notes", [pid(1)])[pid(1)].payload["pk"] == "a2"
    store.delete("notes", [pid(2), pid(42)])
    assert store.count("notes") == 3
    assert store.delete_where("notes", {"user_id": "u2"}) == 2
    assert [p.payload["pk"] for p in store.scroll("notes")] == ["a2"]
    with pytest.raises(VectorStoreError, match="needs a filter"):
        store.delete_where("notes", {})
    store.drop_collection("notes")
    assert store.collections() == []


def test_every_store_refuses_a_missing_collection_and_another_dimension(store: VectorStore) -> None:
    with pytest.raises(VectorStoreError, match=r"'nowhere': no such collection"):
        store.search("nowhere", [1, 0, 0])
    store.ensure_collection("notes", 3)
    with pytest.raises(VectorStoreError, match=r"'notes': holds 3-dimensional vectors, the embedding model gives 4"):
        store.ensure_collection("notes", 4)
    with pytest.raises(VectorStoreError, match=r"filter 'user_id'.*not a str, int or bool"):
        store.count("notes", {"user_id": {"$ne": "x"}})


def test_scroll_pages_through_more_points_than_a_page(store: VectorStore) -> None:
    store.ensure_collection("many", 2)
    store.upsert("many", [VectorPoint(pid(n), [1, n / 2000], {"user_id": f"u{n % 2}"}) for n in range(1300)])
    assert sum(1 for _ in store.scroll("many", {"user_id": "u1"})) == 650
    assert store.count("many") == 1300


def marked(n: int, fingerprint: str, vector: list[Any] | None = None) -> VectorPoint:
    return VectorPoint(pid(n), vector or [1, 0, 0], {"pk": str(n), FINGERPRINT_KEY: fingerprint, SOURCE_KEY: f"s{n}"})


def test_marks_say_what_each_point_was_written_from_through_every_write(store: VectorStore) -> None:
    store.ensure_collection("notes", 3)
    store.upsert("notes", [marked(1, "a"), marked(2, "b"), VectorPoint(pid(3), [0, 1, 0], {"pk": "3"})])
    assert store.marks("notes", [pid(1), pid(2), pid(3), pid(9)]) == {
        pid(1): Marks("a", "s1"), pid(2): Marks("b", "s2"), pid(3): Marks(None, None)}  # 9: no such point
    store.upsert("notes", [marked(1, "a2"), VectorPoint(pid(2), [0, 1, 0], {"pk": "2"})])  # rewritten without
    assert store.marks("notes", [pid(1), pid(2)]) == {pid(1): Marks("a2", "s1"), pid(2): Marks(None, None)}
    store.delete("notes", [pid(1)])
    store.upsert("notes", [marked(4, "d"), marked(5, "e")])
    assert store.delete_where("notes", {"pk": "4"}) == 1
    assert store.marks("notes", [pid(n) for n in (1, 4, 5)]) == {pid(5): Marks("e", "s5")}
    store.upsert("notes", [marked(n, f"f{n}") for n in range(10, 1210)])  # more ids than one query takes
    assert store.marks("notes", [pid(n) for n in range(10, 1210)]) == {
        pid(n): Marks(f"f{n}", f"s{n}") for n in range(10, 1210)}
    store.drop_collection("notes")
    store.ensure_collection("notes", 3)
    assert store.marks("notes", [pid(5), pid(10)]) == {}  # a collection made anew holds none
    with pytest.raises(VectorStoreError, match=r"'nowhere': no such collection"):
        store.marks("nowhere", [pid(1)])


def test_an_embedded_write_that_fails_half_way_leaves_its_points_unlisted_never_stale(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "edge")
    store.ensure_collection("notes", 3)
    store.upsert("notes", [marked(1, "old"), marked(2, "kept")])
    with pytest.raises(ValueError, match="could not convert"):  # fails inside the shard write, after the forget
        store.upsert("notes", [marked(1, "new", ["not a number", 0, 0])])
    assert store.marks("notes", [pid(1), pid(2)]) == {pid(2): Marks("kept", "s2")}  # 1: written again next time
    assert store.count("notes") == 2  # the shard still holds 1, unlisted


def test_an_embedded_point_list_lost_or_unreadable_is_rebuilt_from_the_shard(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = EmbeddedStore(tmp_path / "edge")
    store.ensure_collection("notes", 3)
    store.upsert("notes", [marked(1, "a"), VectorPoint(pid(2), [0, 1, 0], {"pk": "2"})])
    listed = tmp_path / "edge" / "notes" / POINTS
    expected = {pid(1): Marks("a", "s1"), pid(2): Marks(None, None)}
    listed.unlink()  # as a collection made before the list existed
    assert store.marks("notes", [pid(1), pid(2), pid(3)]) == expected
    listed.write_bytes(b"not a database" * 100)
    with caplog.at_level(logging.ERROR):
        assert store.marks("notes", [pid(1), pid(2), pid(3)]) == expected
    assert f"notes: point list {listed} is unreadable" in caplog.text
    assert store.count("notes") == 2  # the points are untouched


def test_the_embedded_list_names_a_point_one_way_however_its_id_is_spelled(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "edge")
    store.ensure_collection("notes", 3)
    store.upsert("notes", [VectorPoint(pid(1).upper(), [1, 0, 0], {FINGERPRINT_KEY: "old"})])
    store.upsert("notes", [marked(1, "new")])
    assert store.marks("notes", [pid(1).upper(), pid(1).replace("-", "")]) == {pid(1): Marks("new", "s1")}
    store.delete("notes", ["{" + pid(1) + "}"])
    assert store.count("notes") == 0 and store.marks("notes", [pid(1)]) == {}
    with pytest.raises(VectorStoreError, match=r"'notes': point id 'r-oil' is not a UUID"):
        store.upsert("notes", [VectorPoint("r-oil", [1, 0, 0])])


def test_an_embedded_point_list_of_another_shape_is_rebuilt_and_a_folder_in_its_place_is_named(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = EmbeddedStore(tmp_path / "edge")
    store.ensure_collection("notes", 3)
    store.upsert("notes", [marked(1, "a")])
    listed = tmp_path / "edge" / "notes" / POINTS
    listed.unlink()
    with closing(sqlite3.connect(listed)) as db:
        db.execute("CREATE TABLE points (id TEXT PRIMARY KEY, other TEXT)")
    with caplog.at_level(logging.ERROR):
        store.upsert("notes", [marked(2, "b")])  # refused before the shard write, rebuilt, then written
    assert "is unreadable" in caplog.text
    assert store.marks("notes", [pid(1), pid(2)]) == {pid(1): Marks("a", "s1"), pid(2): Marks("b", "s2")}
    listed.unlink()
    listed.mkdir()
    with pytest.raises(VectorStoreError, match=rf"'notes': {listed} is a folder where the point list belongs"):
        store.marks("notes", [pid(1)])


def _write_from_another_process(folder: str, start: int) -> None:
    store = EmbeddedStore(Path(folder))
    for n in range(start, start + 20):
        store.upsert("shared", [VectorPoint(pid(n), [1, 0], {"user_id": "u"})])


def test_the_embedded_store_is_shared_by_processes_writing_at_once(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "edge")
    store.ensure_collection("shared", 2)
    # spawn: in a full run this process has threads (cache listeners, result consumers); a fork can hang on their locks
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_write_from_another_process, args=(str(tmp_path / "edge"), s))
               for s in (0, 100)]
    for w in writers:
        w.start()
    for _ in range(20):  # this process reads meanwhile: the shard is never open twice
        store.count("shared")
    for w in writers:
        w.join(120)
    assert [w.exitcode for w in writers] == [0, 0]
    assert store.count("shared") == 40


def test_the_factory_builds_the_embedded_store_under_the_data_dir_without_qdrant_url(tmp_path: Path) -> None:
    store = open_vector_store(Settings.load(env={}, data_dir=tmp_path / "var"))
    assert isinstance(store, EmbeddedStore) and store.folder == (tmp_path / "var" / "vectors").resolve()
    server = open_vector_store(Settings.load(env={"QDRANT_URL": "http://127.0.0.1:1"}))
    assert isinstance(server, QdrantStore)
    server.close()
