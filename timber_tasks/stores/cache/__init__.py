"""The cache's shared level (L2): Redis across hosts, or an in-process stand-in, chosen by URL."""

from __future__ import annotations

from timber_tasks.stores.cache.base import SharedCache


def open_shared_cache(url: str) -> SharedCache:
    """The backend for a URL: redis:// / rediss:// / unix://, or local:// (this process only; tests)."""
    if url.startswith("local://"):
        from timber_tasks.stores.cache.local import LocalCache

        return LocalCache()
    if url.startswith(("redis://", "rediss://", "unix://")):
        from timber_tasks.stores.cache.redis import RedisCache

        return RedisCache(url)
    raise ValueError(f"no shared-cache backend for {url.split('://')[0]!r} URLs (REDIS_URL); "
                     "use redis://host:port/db or local://")


__all__ = ["SharedCache", "open_shared_cache"]
