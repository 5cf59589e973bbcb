"""A token bucket in Redis, updated atomically by a Lua script on Redis's own clock: shared by every host."""

from __future__ import annotations

from typing import Any

from timber_tasks.stores.ratelimit.base import RateLimiter

KEY = "timber:ratelimit:{name}"  # hash {tokens, ts}; expires once it would be full again anyway

# Redis's TIME, not the callers' clocks, so hosts with skewed clocks still share one bucket.
TOKEN_BUCKET = """
local rate, burst, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local last = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - last) * rate)
local wait = 0
if tokens >= want then tokens = tokens - want else wait = (want - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return tostring(wait)
"""


class RedisRateLimiter(RateLimiter):
    """The bucket of one name in the Redis at `redis_url`."""

    def __init__(self, name: str, rate: float, burst: float, *, redis_url: str) -> None:
        import redis

        super().__init__(name, rate, burst)
        self.client: Any = redis.Redis.from_url(redis_url)
        self.key = KEY.format(name=name)
        self._script = self.client.register_script(TOKEN_BUCKET)

    def try_acquire(self, tokens: float = 1) -> float:
        return float(self._script(keys=[self.key], args=[self.rate, self.burst, tokens]))
