"""The Redis shared level: one MGET per read, one pipeline per invalidation, pub/sub across hosts."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import redis

from timber_tasks.stores.cache.base import SharedCache

SCAN_BATCH = 500  # keys per MGET / DEL while walking entries


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class RedisCache(SharedCache):
    """The shared level on a Redis server (REDIS_URL)."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)

    def read(self, data_key: str, ver_key: str, model_ver_key: str) -> tuple[Any, Any, Any]:
        data, ver, model_ver = self.client.mget(data_key, ver_key, model_ver_key)
        return data, ver, model_ver

    def write(self, data_key: str, body: str, ttl: int) -> None:
        self.client.set(data_key, body, ex=ttl)

    def invalidate(self, keys: Iterable[tuple[str, str]], version_ttl: int, model_ver_key: str | None,
                   channel: str, message: str) -> None:
        pipe = self.client.pipeline(transaction=False)
        for data_key, ver_key in keys:
            pipe.incr(ver_key)
            # The version must outlive any entry filled before it; after that it may go (no leak).
            pipe.expire(ver_key, version_ttl)
            pipe.delete(data_key)
        if model_ver_key is not None:
            pipe.incr(model_ver_key)
        pipe.publish(channel, message)
        pipe.execute()

    def subscribe(self, channel: str, on_message: Callable[[dict[str, Any]], None],
                  on_error: Callable[[BaseException, Any, Any], None]) -> Any:
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(**{channel: on_message})
        return pubsub.run_in_thread(sleep_time=0.25, daemon=True, exception_handler=on_error)

    def scan(self, prefix: str) -> Iterator[tuple[str, Any]]:
        batch: list[bytes] = []
        for key in self.client.scan_iter(match=_glob_escape(prefix) + "*", count=1000):
            batch.append(key)
            if len(batch) >= SCAN_BATCH:
                yield from self._values(batch)
                batch = []
        yield from self._values(batch)

    def _values(self, keys: list[bytes]) -> Iterator[tuple[str, Any]]:
        if keys:
            for key, value in zip(keys, self.client.mget(keys), strict=True):
                if value is not None:
                    yield key.decode(), value

    def delete(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        for start in range(0, len(keys), SCAN_BATCH):
            self.client.delete(*keys[start:start + SCAN_BATCH])

    def close(self) -> None:
        self.client.close()
