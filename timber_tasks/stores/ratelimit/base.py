"""The rate-limit interface: a token bucket (`rate` tokens per second, up to `burst` saved up)."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from pathlib import Path

from timber_tasks.errors import TimberError


class RateLimitTimeout(TimberError):
    """Raised when tokens could not be had within the caller's timeout."""

    def __init__(self, name: str, tokens: float, timeout: float) -> None:
        super().__init__(f"rate limit {name!r}: {tokens} token(s) not available within {timeout}s")
        self.name, self.tokens, self.timeout = name, tokens, timeout


class RateLimiter(ABC):
    """One named bucket; every process that builds a limiter with the same name and store shares it."""

    def __init__(self, name: str, rate: float, burst: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate limit {name!r}: rate must be > 0 and burst >= 1 (got {rate}, {burst})")
        self.name, self.rate, self.burst = name, float(rate), float(burst)

    @abstractmethod
    def try_acquire(self, tokens: float = 1) -> float:
        """Take the tokens if the bucket has them and return 0; else take none and return the wait in seconds."""

    def acquire(self, tokens: float = 1, timeout: float | None = None) -> float:
        """Block until the tokens are taken; returns the seconds waited."""
        if tokens > self.burst:
            raise ValueError(f"rate limit {self.name!r}: {tokens} tokens asked, the bucket holds {self.burst}")
        started = time.monotonic()
        while True:
            wait = self.try_acquire(tokens)
            waited = time.monotonic() - started
            if wait <= 0:
                return waited
            if timeout is not None and waited + wait > timeout:
                raise RateLimitTimeout(self.name, tokens, timeout)
            time.sleep(wait)


def refill(tokens: float, last: float, now: float, rate: float, burst: float) -> float:
    """The bucket's level now: what it held plus what the elapsed time added, capped at burst."""
    return min(burst, tokens + max(0.0, now - last) * rate)


def rate_limiter(name: str, rate: float, burst: float, *, redis_url: str | None, data_dir: Path | str) -> RateLimiter:
    """The bucket shared by all hosts (Redis) when a Redis URL is given, else by the processes of this host."""
    if redis_url:
        from timber_tasks.stores.ratelimit.redis import RedisRateLimiter

        return RedisRateLimiter(name, rate, burst, redis_url=redis_url)
    from timber_tasks.stores.ratelimit.local import LocalRateLimiter

    return LocalRateLimiter(name, rate, burst, folder=Path(data_dir) / "ratelimit")
