"""Token buckets, one contract for both stores: Redis (every host) and a locked file (every process of a host)."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest

from timber_tasks.stores.ratelimit import RateLimiter, RateLimitTimeout, rate_limiter

from .market_helpers import take_tokens


@pytest.fixture(params=["local", "redis"])
def bucket_store(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(kind, where): a Redis URL, or the data dir of the host-wide file bucket."""
    if request.param == "redis":
        return "redis", request.getfixturevalue("redis_url")
    return "local", str(tmp_path / "var")


def _limiter(store: tuple[str, str], rate: float, burst: float, name: str = "t") -> RateLimiter:
    kind, where = store
    return rate_limiter(name, rate, burst, redis_url=where if kind == "redis" else None, data_dir=where)


def test_a_full_bucket_grants_its_burst_then_says_how_long_to_wait(bucket_store: tuple[str, str]) -> None:
    limiter = _limiter(bucket_store, rate=2, burst=3)
    assert [limiter.try_acquire() for _ in range(3)] == [0, 0, 0]
    wait = limiter.try_acquire()
    assert 0 < wait <= 0.5  # one token at 2 per second
    assert limiter.try_acquire(2) > wait  # two tokens take longer; nothing was taken meanwhile


def test_acquire_blocks_until_the_bucket_refills(bucket_store: tuple[str, str]) -> None:
    limiter = _limiter(bucket_store, rate=20, burst=1)
    assert limiter.acquire() < 0.05
    assert limiter.acquire() > 0  # had to wait for the refill, and got the token
    assert limiter.try_acquire() > 0


def test_a_timeout_too_short_for_the_refill_is_an_error_naming_the_bucket(bucket_store: tuple[str, str]) -> None:
    limiter = _limiter(bucket_store, rate=0.1, burst=1, name="slow-provider")
    limiter.acquire()
    with pytest.raises(RateLimitTimeout, match=r"rate limit 'slow-provider': 1 token\(s\) not available within 1"):
        limiter.acquire(timeout=1)
    with pytest.raises(ValueError, match=r"rate must be > 0"):
        _limiter(bucket_store, rate=0, burst=1)


def test_buckets_with_different_names_are_independent(bucket_store: tuple[str, str]) -> None:
    a, b = _limiter(bucket_store, 1, 1, name="a"), _limiter(bucket_store, 1, 1, name="b")
    assert a.try_acquire() == 0 and b.try_acquire() == 0
    assert a.try_acquire() > 0 and b.try_acquire() > 0


def test_two_processes_share_one_bucket(bucket_store: tuple[str, str]) -> None:
    kind, where = bucket_store
    rate, burst, seconds = 10.0, 5.0, 1.5
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    workers = [ctx.Process(target=take_tokens, args=(kind, where, rate, burst, start, seconds, out))
               for _ in range(2)]
    for w in workers:
        w.start()
    time.sleep(0.5)  # both children import and block on the event (a late one only takes fewer tokens)
    began = time.monotonic()
    start.set()
    counts = [out.get(timeout=120) for _ in workers]
    elapsed = time.monotonic() - began
    for w in workers:
        w.join(30)
    # One shared bucket grants at most burst + rate x time in total; two separate buckets would
    # grant about twice that (each process its own burst and refill).
    assert sum(counts) <= burst + rate * elapsed + 1, (counts, elapsed)
    assert sum(counts) >= burst and all(c > 0 for c in counts), counts
