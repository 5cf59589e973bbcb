"""What the cache needs from its shared level: versioned entries and an invalidation channel."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from typing import Any


class SharedCache(ABC):
    """Entries every process reads, version counters writers bump, and a channel to tell other hosts."""

    @abstractmethod
    def read(self, data_key: str, ver_key: str, model_ver_key: str) -> tuple[Any, Any, Any]:
        """The entry and its two version counters, in one round trip (None where absent)."""

    @abstractmethod
    def write(self, data_key: str, body: str, ttl: int) -> None:
        """Store an entry for ttl seconds."""

    @abstractmethod
    def invalidate(self, keys: Iterable[tuple[str, str]], version_ttl: int, model_ver_key: str | None,
                   channel: str, message: str) -> None:
        """Bump the version of each (data_key, ver_key), drop the data, bump the model's version, publish."""

    @abstractmethod
    def subscribe(self, channel: str, on_message: Callable[[dict[str, Any]], None],
                  on_error: Callable[[BaseException, Any, Any], None]) -> Any:
        """Call on_message({"data": message}) for each message published on channel; returns a stoppable thread."""

    @abstractmethod
    def scan(self, prefix: str) -> Iterator[tuple[str, Any]]:
        """Every (key, value) whose key starts with prefix (GDPR erasure and verify walk the entries)."""

    @abstractmethod
    def delete(self, keys: Iterable[str]) -> None:
        """Drop these entries."""

    @abstractmethod
    def close(self) -> None:
        """Drop connections; the store reconnects on demand."""
