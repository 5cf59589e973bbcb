"""The two-level cache: hits, invalidation by every write path, Redis, and other processes."""

from __future__ import annotations

import json
import multiprocessing
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import select, update

from timber_tasks import initialize_timber
from timber_tasks.features.cache import get_cached, warm_cache

ITEMS = """
version: "1"
models:
  - name: Item
    table_name: items
    caching: {enabled: true, ttl_seconds: 60, max_entries: 3, warm_keys: ["1", "2", "404"]}
    encryption: {enabled: true, fields: [secret]}
    columns:
      - {name: id, type: String(10), primary_key: true}
      - {name: name, type: String(50)}
      - {name: secret, type: Text}
      - {name: owner_id, type: Integer, foreign_key: owners.id, ondelete: CASCADE}
  - name: Owner
    table_name: owners
    columns:
      - {name: id, type: Integer, primary_key: true}
  - name: Plain
    table_name: plain
    columns:
      - {name: id, type: Integer, primary_key: true}
"""


@pytest.fixture
def items_dir(write_models: Callable[..., Path]) -> Path:
    return write_models({"items.yaml": ITEMS})


@pytest.fixture(params=["sqlite", "postgresql+redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """Keyword arguments for initialize_timber: SQLite with L1 only, or PostgreSQL with Redis as L2."""
    if request.param == "sqlite":
        return {"database_url": f"sqlite:///{tmp_path / 'cache.db'}"}
    return {"database_url": request.getfixturevalue("postgres_url"),
            "redis_url": request.getfixturevalue("redis_url")}


def _seed(timber, *ids: str) -> None:  # type: ignore[no-untyped-def]
    Item = timber.get_model("Item")
    with timber.db.session_scope() as s:
        s.add_all([Item(id=i, name=f"item {i}", secret=f"s3cret-{i}") for i in ids])


def _stats(timber) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return timber.cache.stats()["Item"]


def test_a_second_read_by_id_is_an_l1_hit_and_counters_say_so(backend: dict[str, Any], items_dir: Path) -> None:
    timber = initialize_timber(model_config_dirs=[items_dir], **backend)
    _seed(timber, "1")
    assert get_cached(timber, "Item", "1")["secret"] == "s3cret-1"
    assert get_cached(timber, "Item", "1")["name"] == "item 1"
    assert get_cached(timber, "Item", "missing") is None
    assert _stats(timber) == {"hits_l1": 1, "hits_l2": 0, "misses": 2, "l1_entries": 1}
    assert "Plain" not in timber.cache.stats()  # no caching block: passes straight through


def test_plain_orm_updates_and_deletes_invalidate_after_commit(backend: dict[str, Any], items_dir: Path) -> None:
    timber = initialize_timber(model_config_dirs=[items_dir], **backend)
    _seed(timber, "1", "2")
    Item = timber.get_model("Item")
    get_cached(timber, Item, "1"), get_cached(timber, Item, "2")
    with timber.db.session_scope() as s:
        s.get(Item, "1").name = "renamed"
        s.delete(s.get(Item, "2"))
        s.flush()
        assert get_cached(timber, Item, "1")["name"] == "item 1"  # not committed yet: nothing changed
    assert get_cached(timber, Item, "1")["name"] == "renamed"
    assert get_cached(timber, Item, "2") is None


def test_a_rolled_back_write_leaves_the_cache_alone(backend: dict[str, Any], items_dir: Path) -> None:
    timber = initialize_timber(model_config_dirs=[items_dir], **backend)
    _seed(timber, "1")
    Item = timber.get_model("Item")
    get_cached(timber, Item, "1")
    with pytest.raises(RuntimeError), timber.db.session_scope() as s:
        s.get(Item, "1").name = "never"
        s.flush()
        raise RuntimeError
    assert get_cached(timber, Item, "1")["name"] == "item 1"
    assert _stats(timber)["hits_l1"] == 1


def test_a_bulk_update_invalidates_the_whole_model(backend: dict[str, Any], items_dir: Path) -> None:
    timber = initialize_timber(model_config_dirs=[items_dir], **backend)
    _seed(timber, "1", "2")
    Item = timber.get_model("Item")
    get_cached(timber, Item, "1"), get_cached(timber, Item, "2")
    with timber.db.session_scope() as s:
        s.execute(update(Item).values(name="bulk"))
    assert {get_cached(timber, Item, i)["name"] for i in ("1", "2")} == {"bulk"}


def test_a_delete_the_database_cascades_invalidates_the_rows_it_took_along(
    backend: dict[str, Any], items_dir: Path
) -> None:
    timber = initialize_timber(model_config_dirs=[items_dir], **backend)
    Item, Owner = timber.get_model("Item"), timber.get_model("Owner")
    with timber.db.session_scope() as s:
        s.add(Owner(id=1))
        s.flush()
        s.add(Item(id="1", name="owned", owner_id=1))
    assert get_cached(timber, Item, "1")["owner_id"] == 1
    with timber.db.session_scope() as s:
        s.delete(s.get(Owner, 1))  # ON DELETE CASCADE removes the item; no session saw it go
    assert get_cached(timber, Item, "1") is None


def test_l1_is_bounded_by_max_entries_and_expires_after_its_ttl(items_dir: Path, tmp_path: Path) -> None:
    timber = initialize_timber(model_config_dirs=[items_dir], database_url=f"sqlite:///{tmp_path}/b.db")
    _seed(timber, "1", "2", "3", "4")
    for i in ("1", "2", "3", "4"):
        get_cached(timber, "Item", i)
    assert _stats(timber)["l1_entries"] == 3  # max_entries: 3, least recently used dropped
    get_cached(timber, "Item", "1")
    assert _stats(timber)["misses"] == 5
    Item = timber.get_model("Item")
    for entry in timber.cache._models[Item].l1.values():
        entry.expires = time.monotonic() - 1
    get_cached(timber, "Item", "4")
    assert _stats(timber)["misses"] == 6


def test_warming_loads_the_yaml_keys_or_the_callers(backend: dict[str, Any], items_dir: Path) -> None:
    timber = initialize_timber(model_config_dirs=[items_dir], **backend)
    _seed(timber, "1", "2", "3")
    assert warm_cache(timber, "Item") == 2  # "404" does not exist
    assert warm_cache(timber, "Item", ["3"]) == 1
    before = _stats(timber)["hits_l1"]
    for i in ("1", "2", "3"):
        get_cached(timber, "Item", i)
    assert _stats(timber)["hits_l1"] == before + 3


def test_redis_serves_another_process_and_never_holds_encrypted_fields_in_plaintext(
    postgres_url: str, redis_url: str, items_dir: Path
) -> None:
    first = initialize_timber(model_config_dirs=[items_dir], database_url=postgres_url, redis_url=redis_url)
    _seed(first, "1")
    get_cached(first, "Item", "1")
    client = redis.Redis.from_url(redis_url)
    stored = [client.get(k) for k in client.keys("*:data:*")]
    assert len(stored) == 1 and b"s3cret" not in stored[0] and b"item 1" in stored[0]
    assert json.loads(stored[0])["r"]["secret"].startswith("gAAAAA")
    second = initialize_timber(model_config_dirs=[items_dir], database_url=postgres_url, redis_url=redis_url,
                               create_tables=False)  # a fresh L1, as another worker has
    assert get_cached(second, "Item", "1")["secret"] == "s3cret-1"
    assert _stats(second) == {"hits_l1": 0, "hits_l2": 1, "misses": 0, "l1_entries": 1}
    client.close()


def test_an_l2_fill_that_raced_a_commit_is_never_served(postgres_url: str, redis_url: str, items_dir: Path) -> None:
    timber = initialize_timber(model_config_dirs=[items_dir], database_url=postgres_url, redis_url=redis_url)
    _seed(timber, "1")
    Item = timber.get_model("Item")
    mc = timber.cache._models[Item]
    # a reader looks up the version, then reads the row
    _, versions = timber.cache._l2_get(timber.cache.shared(), mc, "items:1")
    stale = {"id": "1", "name": "item 1", "secret": "s3cret-1"}
    with timber.db.session_scope() as s:  # meanwhile a writer commits
        s.get(Item, "1").name = "fresh"
    timber.cache._l2_put(timber.cache.shared(), mc, "items:1", stale, versions)  # the slow reader stores what it read
    timber.cache.clear_l1()
    assert get_cached(timber, Item, "1")["name"] == "fresh"


def _reader(conn: Any, kwargs: dict[str, Any], items_dir: str) -> None:
    """Another worker process: read, wait for the parent's commit, read again."""
    timber = initialize_timber(model_config_dirs=[items_dir], create_tables=False, **kwargs)
    first = get_cached(timber, "Item", "1")["name"]
    again = get_cached(timber, "Item", "1")["name"]
    conn.send((first, again))
    conn.recv()  # the parent has committed its write
    conn.send((get_cached(timber, "Item", "1")["name"], timber.cache.stats()["Item"]))
    timber.close()


def test_a_write_in_one_process_is_never_served_stale_from_another_processes_cache(
    backend: dict[str, Any], items_dir: Path
) -> None:
    timber = initialize_timber(model_config_dirs=[items_dir], **backend)
    _seed(timber, "1")
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_reader, args=(child, backend, str(items_dir)))
    proc.start()
    try:
        assert parent.poll(60)
        assert parent.recv() == ("item 1", "item 1")  # the child now holds the row in its L1
        Item = timber.get_model("Item")
        with timber.db.session_scope() as s:  # plain ORM, as a persistence job writes
            s.get(Item, "1").name = "written elsewhere"
        parent.send("committed")
        assert parent.poll(60)
        name, stats = parent.recv()
    finally:
        proc.join(30)
    assert name == "written elsewhere"
    assert stats["hits_l1"] == 1 and stats["misses"] + stats["hits_l2"] == 2


def test_a_process_on_another_host_drops_its_l1_entry_on_the_pubsub_invalidation(
    postgres_url: str, redis_url: str, items_dir: Path, tmp_path: Path
) -> None:
    writer = initialize_timber(model_config_dirs=[items_dir], database_url=postgres_url, redis_url=redis_url)
    _seed(writer, "1")
    # Another data dir: no shared generation file, as on another host; only pub/sub reaches it.
    other_host = initialize_timber(model_config_dirs=[items_dir], database_url=postgres_url, redis_url=redis_url,
                                   create_tables=False, data_dir=tmp_path / "other-host")
    assert get_cached(other_host, "Item", "1")["name"] == "item 1"
    time.sleep(0.2)  # the listener thread subscribes
    Item = writer.get_model("Item")
    with writer.db.session_scope() as s:
        s.get(Item, "1").name = "new"
    deadline = time.monotonic() + 5
    while _stats(other_host)["l1_entries"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert get_cached(other_host, "Item", "1")["name"] == "new"
    other_host.close()


def test_reads_through_the_services_use_the_cache(backend: dict[str, Any]) -> None:
    from .conftest import ROOT

    timber = initialize_timber(app_name="canopy", model_config_dirs=[ROOT / "model_configs"], **backend)
    User = timber.get_model("User")
    with timber.db.session_scope() as s:
        user = User(email="c@example.com", username="cache_user")
        s.add(user)
        s.flush()
        user_id = user.id
    created = timber.services.sessions.create(user_id, "trading")
    for _ in range(3):
        assert timber.services.sessions.get(created["id"])["status"] == "active"
    assert timber.cache.stats()["Session"]["hits_l1"] >= 2
    with timber.db.session_scope() as s:
        s.scalars(select(timber.get_model("Session"))).one().status = "cancelled"
    assert timber.services.sessions.get(created["id"])["status"] == "cancelled"
