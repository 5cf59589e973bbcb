"""Two-level read cache by primary key, invalidated after commit by whichever session wrote.

Reads go L1 (this process: TTL + LRU) -> L2 (the shared level of stores/cache/: Redis when
REDIS_URL is set) -> database.

Invalidation is a hook on the after-write step (features/writes.py), not in the services:
every write path (ORM, bulk, Core upserts, cascades) reports its keys there and the hook
drops them after commit, so plain ORM code and Celery persistence jobs invalidate exactly
like the services do.

Why no process serves a stale row once the commit's invalidation has run:
- L1 entries are checked on every hit against generation counters in a memory-mapped file
  under the data dir (one slot per key hash, one per model). The writer bumps the slots
  after commit; every process on the host sees the bump at once, and a hit costs two
  memory reads, not a network round trip. This needs no server, so it also covers the
  embedded default (SQLite, no Redis).
- L2 entries carry the Redis version counter of their key (and model) read before the
  database read; the writer INCRs the counters after commit, so an entry filled from a
  read that raced the write never matches again. One MGET per L2 read.
- Processes on other hosts, which do not share the file, get each invalidation on a Redis
  pub/sub channel and bump their own host's counters, so a reader there that loaded the
  old row just before the message cannot store it as current. Delivery takes the
  channel's latency (well under a millisecond on one network), so across hosts "never
  stale" holds from the moment the message is delivered; a lost subscription clears L1.
Encrypted fields are written to Redis as Fernet tokens, never in plaintext.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.fernet import InvalidToken

from timber_tasks.features.generations import Generations, database_namespace
from timber_tasks.features.writes import CommittedWrites, on_commit
from timber_tasks.models.records import to_jsonable
from timber_tasks.stores.cache import SharedCache, open_shared_cache

log = logging.getLogger("timber_tasks.cache")

CHANNEL = "timber:cache:invalidate:{namespace}"  # pub/sub spans every Redis database: one channel per DB


@dataclass
class Entry:
    payload: str
    expires: float
    gen: int
    model_gen: int


@dataclass
class ModelCache:
    """L1 entries and counters of one model."""

    name: str
    table: str
    ttl: int
    max_entries: int
    key_format: str
    encrypted: tuple[str, ...]
    model_slot: int
    l1: OrderedDict[str, Entry] = field(default_factory=OrderedDict)
    hits_l1: int = 0
    hits_l2: int = 0
    misses: int = 0

    def key(self, pk: Any) -> str:
        ident = ":".join(str(p) for p in pk) if isinstance(pk, tuple | list) else str(pk)
        return self.key_format.format(id=ident, model=self.name, table=self.table)


class CacheManager:
    """The L1/L2 cache of one Timber; models without a `caching` block pass straight through."""

    def __init__(self, models: Sequence[type[Any]], generations: Generations, redis_url: str | None,
                 keyring: Any, namespace: str) -> None:
        self.generations = generations
        self.keyring = keyring
        self.namespace = namespace
        self._lock = threading.Lock()
        self._models: dict[type[Any], ModelCache] = {}
        self._by_name: dict[str, ModelCache] = {}
        for model in models:
            spec = model.timber_spec
            caching = spec.spec.caching
            enc = spec.spec.encryption
            mc = ModelCache(
                name=spec.name, table=spec.table_name, ttl=caching.ttl_seconds, max_entries=caching.max_entries,
                key_format=caching.cache_key_format or "{table}:{id}",
                encrypted=tuple(enc.fields) if enc is not None and enc.enabled else (),
                model_slot=Generations.slot(f"{namespace}:model:{spec.name}"))
            self._models[model] = mc
            self._by_name[spec.name] = mc
        self.shared_url = redis_url
        self._shared: SharedCache | None = None  # built on first use in each process
        self._shared_pid: int | None = None
        self._thread: Any = None
        self._pid = os.getpid()

    @classmethod
    def for_timber(cls, timber: Any) -> CacheManager:
        gens = Generations.at(Path(timber.settings.data_dir) / "cache-generations.bin")
        return cls(timber.registry.with_feature("caching"), gens, timber.settings.redis_url, timber.keyring,
                   database_namespace(timber.db.url))

    # -- reads --------------------------------------------------------------------------

    def get(self, model: type[Any], pk: Any, load: Callable[[], dict[str, Any] | None]) -> dict[str, Any] | None:
        """The row as a JSON-safe dict: from L1, then L2, then `load()` (the database)."""
        mc = self._models.get(model)
        if mc is None:
            return load()
        key = mc.key(pk)
        gens = self.generations
        gen, model_gen = gens.read(self._slot(mc, key)), gens.read(mc.model_slot)
        with self._lock:
            entry = mc.l1.get(key)
            if entry is not None:
                if entry.gen == gen and entry.model_gen == model_gen and entry.expires > time.monotonic():
                    mc.l1.move_to_end(key)
                    mc.hits_l1 += 1
                    return dict(json.loads(entry.payload))
                del mc.l1[key]
        versions: tuple[Any, Any] = (None, None)
        shared = self.shared()
        if shared is not None:
            self._ensure_listener(shared)
            record, versions = self._l2_get(shared, mc, key)
            if record is not None:
                mc.hits_l2 += 1
                self._l1_put(mc, key, record, gen, model_gen)
                return record
        mc.misses += 1
        record = load()
        if record is not None:
            self._l1_put(mc, key, record, gen, model_gen)
            if shared is not None:
                self._l2_put(shared, mc, key, record, versions)
        return record

    def _l1_put(self, mc: ModelCache, key: str, record: dict[str, Any], gen: int, model_gen: int) -> None:
        entry = Entry(json.dumps(record), time.monotonic() + mc.ttl, gen, model_gen)
        with self._lock:
            mc.l1[key] = entry
            mc.l1.move_to_end(key)
            while len(mc.l1) > mc.max_entries:
                mc.l1.popitem(last=False)

    def _slot(self, mc: ModelCache, key: str) -> int:
        return Generations.slot(f"{self.namespace}:{mc.name}:{key}")

    def _rkeys(self, mc: ModelCache, key: str) -> tuple[str, str, str]:
        # The model name is part of every key: two models may share a cache_key_format.
        return (f"{self.namespace}:data:{mc.name}:{key}", f"{self.namespace}:ver:{mc.name}:{key}",
                f"{self.namespace}:ver:model:{mc.name}")

    def shared(self) -> SharedCache | None:
        """The shared level (L2) of this process, opened on first use (and anew after a fork)."""
        if self.shared_url is None:
            return None
        if self._shared is None or self._shared_pid != os.getpid():
            self._shared, self._shared_pid = open_shared_cache(self.shared_url), os.getpid()
        return self._shared

    def _l2_get(self, shared: SharedCache, mc: ModelCache, key: str) -> tuple[dict[str, Any] | None, tuple[Any, Any]]:
        data_key, ver_key, model_ver_key = self._rkeys(mc, key)
        data, ver, model_ver = shared.read(data_key, ver_key, model_ver_key)
        versions = (_text(ver), _text(model_ver))
        if data is None:
            return None, versions
        stored = json.loads(data)
        if (stored.get("v"), stored.get("mv")) != versions:
            return None, versions  # filled before a write that has committed since
        record: dict[str, Any] = stored["r"]
        try:
            for name in mc.encrypted:
                if record.get(name) is not None:
                    record[name] = json.loads(self.keyring.decrypt(record[name]))
        except InvalidToken:  # written under a key since removed: read the database instead
            return None, versions
        return record, versions

    def _l2_put(self, shared: SharedCache, mc: ModelCache, key: str, record: dict[str, Any],
                versions: tuple[Any, Any]) -> None:
        stored = dict(record)
        for name in mc.encrypted:
            if stored.get(name) is not None:
                stored[name] = self.keyring.encrypt(json.dumps(stored[name]).encode("utf-8"))
        body = json.dumps({"v": versions[0], "mv": versions[1], "r": stored})
        shared.write(self._rkeys(mc, key)[0], body, mc.ttl)

    # -- invalidation -------------------------------------------------------------------

    def invalidate(self, model: type[Any] | str, pks: Iterable[Any] = (), *, whole_model: bool = False) -> None:
        """Make every process stop serving these rows (or every row of the model)."""
        mc = self._by_name.get(model) if isinstance(model, str) else self._models.get(model)
        if mc is None:
            return
        keys = {mc.key(pk) for pk in pks}
        self._drop_local(mc, keys, whole_model)
        shared = self.shared()
        if shared is not None:
            message = {"ns": self.namespace, "model": mc.name, "keys": sorted(keys), "all": whole_model,
                       "gens": self.generations.identity}
            # A version outlives any entry filled before it (2 x ttl); after that it may go (no leak).
            shared.invalidate([self._rkeys(mc, k)[:2] for k in keys], 2 * mc.ttl + 60,
                              self._rkeys(mc, "")[2] if whole_model else None,
                              CHANNEL.format(namespace=self.namespace), json.dumps(message))

    def _ensure_listener(self, shared: SharedCache) -> None:
        """Subscribe (once per process) to invalidations published by other hosts."""
        if self._thread is not None and self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._thread = shared.subscribe(CHANNEL.format(namespace=self.namespace), self._on_message,
                                        self._on_listener_error)

    def _drop_local(self, mc: ModelCache, keys: Iterable[str], whole_model: bool, bump: bool = True) -> None:
        """Bump the host's generation slots (every process here stops serving), then drop our own entries."""
        keys = list(keys)
        if bump:
            slots = [self._slot(mc, k) for k in keys]
            self.generations.bump([*slots, mc.model_slot] if whole_model else slots)
        with self._lock:
            if whole_model:
                mc.l1.clear()
            for k in keys:
                mc.l1.pop(k, None)

    def _on_message(self, message: dict[str, Any]) -> None:
        body = json.loads(message["data"])
        mc = self._by_name.get(body["model"])
        if body["ns"] != self.namespace or mc is None:
            return
        # From another host: bump this host's slots too. Popping alone would lose to a reader that
        # loaded the old row before the message came and stores it after; the bump outdates its entry.
        self._drop_local(mc, body["keys"], body["all"], bump=body.get("gens") != self.generations.identity)

    def _on_listener_error(self, exc: BaseException, pubsub: Any, thread: Any) -> None:
        # Invalidations may have been missed while disconnected: forget everything in L1.
        log.warning("cache invalidation listener lost Redis (%s); clearing the in-process cache", exc)
        self.clear_l1()
        thread.stop()
        self._thread = None

    # -- entries by content (GDPR erasure and verify) ----------------------------------------

    def l1_records(self, model: type[Any]) -> list[tuple[str, dict[str, Any]]]:
        """This process's servable L1 entries of a model, as (key, record); invalidated ones are dropped now."""
        mc = self._models.get(model)
        if mc is None:
            return []
        model_gen, now = self.generations.read(mc.model_slot), time.monotonic()
        with self._lock:
            stale = [key for key, entry in mc.l1.items() if entry.model_gen != model_gen or entry.expires <= now
                     or entry.gen != self.generations.read(self._slot(mc, key))]
            for key in stale:  # what a read would do: another process's invalidation outdated them
                del mc.l1[key]
            return [(key, json.loads(entry.payload)) for key, entry in mc.l1.items()]

    def drop_l1(self, model: type[Any], keys: Iterable[str]) -> None:
        mc = self._models.get(model)
        if mc is not None:
            with self._lock:
                for key in keys:
                    mc.l1.pop(key, None)

    def l2_records(self, model: type[Any]) -> Iterator[tuple[str, dict[str, Any] | None]]:
        """Every L2 entry of a model as (Redis key, record); None where no configured key opens it."""
        mc, shared = self._models.get(model), self.shared()
        if mc is None or shared is None:
            return
        for data_key, data in shared.scan(self._rkeys(mc, "")[0]):
            record: dict[str, Any] = json.loads(data)["r"]
            try:
                for name in mc.encrypted:
                    if record.get(name) is not None:
                        record[name] = json.loads(self.keyring.decrypt(record[name]))
            except InvalidToken:
                yield data_key, None
                continue
            yield data_key, record

    def drop_l2(self, keys: Iterable[str]) -> None:
        shared = self.shared()
        if shared is not None:
            shared.delete(keys)

    # -- the rest -------------------------------------------------------------------------

    def clear_l1(self) -> None:
        with self._lock:
            for mc in self._models.values():
                mc.l1.clear()

    def stats(self) -> dict[str, dict[str, int]]:
        """Hit and miss counters per cached model."""
        return {mc.name: {"hits_l1": mc.hits_l1, "hits_l2": mc.hits_l2, "misses": mc.misses,
                          "l1_entries": len(mc.l1)} for mc in self._models.values()}

    def is_cached(self, model: type[Any]) -> bool:
        return model in self._models

    def close(self) -> None:
        """Stop the listener and drop connections; the cache stays usable and reconnects on demand."""
        if self._thread is not None and self._pid == os.getpid():
            self._thread.stop()
            self._thread.join(timeout=2)
        self._thread = None
        if self._shared is not None and self._shared_pid == os.getpid():
            self._shared.close()


def _text(value: Any) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def load_record(timber: Any, model: type[Any], pk: Any) -> dict[str, Any] | None:
    """Read one row by primary key straight from the database, as a JSON-safe dict."""
    with timber.db.session_scope() as session:
        obj = session.get(model, pk)
        return to_jsonable(obj) if obj is not None else None


def get_cached(timber: Any, model: type[Any] | str, pk: Any) -> dict[str, Any] | None:
    """A row by primary key through L1, L2 and the database (no app checks: services add those)."""
    cls = timber.registry.get(model) if isinstance(model, str) else model
    result: dict[str, Any] | None = timber.cache.get(cls, pk, lambda: load_record(timber, cls, pk))
    return result


def warm_cache(timber: Any, model_name: str, keys: Sequence[Any] | None = None) -> int:
    """Load rows into L1 and L2: the keys given, else the model's `caching.warm_keys`.

    Returns how many of the keys exist. (Celery wrapper and beat entry: the platform's
    maintenance task calls this.)
    """
    model = timber.registry.get(model_name)
    if keys is None:
        caching = model.timber_spec.spec.caching
        keys = list(caching.warm_keys) if caching is not None else []
    found = 0
    for pk in keys:
        if get_cached(timber, model, pk) is not None:
            found += 1
    return found


# -- after commit: every write path reaches the cache through the after-write step ------------


def invalidate_committed(committed: CommittedWrites) -> None:
    """The cache's after-write hook: drop what the transaction wrote, in every process."""
    cache: CacheManager | None = getattr(committed.timber, "cache", None)
    if cache is None:
        return
    for writes in committed.by_model.values():
        if cache.is_cached(writes.model):
            cache.invalidate(writes.model, writes.written | writes.deleted, whole_model=writes.whole_model)


on_commit(invalidate_committed, name="cache")
