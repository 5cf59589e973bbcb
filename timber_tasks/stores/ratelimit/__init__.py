"""Token buckets shared by every process: in Redis when REDIS_URL is set, else host-wide in a locked file."""

from timber_tasks.stores.ratelimit.base import RateLimiter, RateLimitTimeout, rate_limiter

__all__ = ["RateLimitTimeout", "RateLimiter", "rate_limiter"]
