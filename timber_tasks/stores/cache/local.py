"""An in-process shared level: the same contract as Redis, for tests and single-process use."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from timber_tasks.stores.cache.base import SharedCache


class _Subscription:
    def __init__(self, owner: LocalCache, channel: str, callback: Callable[[dict[str, Any]], None]) -> None:
        self.owner, self.channel, self.callback = owner, channel, callback

    def stop(self) -> None:
        with self.owner.lock:
            if self in self.owner.subscribers:
                self.owner.subscribers.remove(self)

    def join(self, timeout: float | None = None) -> None:
        return None


class LocalCache(SharedCache):
    """Entries and counters in a dict of this process; messages go to this process's subscribers."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.values: dict[str, tuple[Any, float]] = {}  # key -> (value, expires at; 0 = never)
        self.subscribers: list[_Subscription] = []

    def _get(self, key: str) -> Any:
        value, expires = self.values.get(key, (None, 0.0))
        if expires and expires < time.monotonic():
            self.values.pop(key, None)
            return None
        return value

    def read(self, data_key: str, ver_key: str, model_ver_key: str) -> tuple[Any, Any, Any]:
        with self.lock:
            return self._get(data_key), self._get(ver_key), self._get(model_ver_key)

    def write(self, data_key: str, body: str, ttl: int) -> None:
        with self.lock:
            self.values[data_key] = (body, time.monotonic() + ttl)

    def _incr(self, key: str, ttl: int = 0) -> None:
        current = self._get(key)
        self.values[key] = (str(int(current or 0) + 1), time.monotonic() + ttl if ttl else 0.0)

    def invalidate(self, keys: Iterable[tuple[str, str]], version_ttl: int, model_ver_key: str | None,
                   channel: str, message: str) -> None:
        with self.lock:
            for data_key, ver_key in keys:
                self._incr(ver_key, version_ttl)
                self.values.pop(data_key, None)
            if model_ver_key is not None:
                self._incr(model_ver_key)
            subscribers = [s for s in self.subscribers if s.channel == channel]
        for sub in subscribers:
            sub.callback({"data": message})

    def subscribe(self, channel: str, on_message: Callable[[dict[str, Any]], None],
                  on_error: Callable[[BaseException, Any, Any], None]) -> Any:
        sub = _Subscription(self, channel, on_message)
        with self.lock:
            self.subscribers.append(sub)
        return sub

    def scan(self, prefix: str) -> Iterator[tuple[str, Any]]:
        with self.lock:
            found = [(k, self._get(k)) for k in list(self.values) if k.startswith(prefix)]
        return iter([(k, v) for k, v in found if v is not None])

    def delete(self, keys: Iterable[str]) -> None:
        with self.lock:
            for key in keys:
                self.values.pop(key, None)

    def close(self) -> None:
        return None
