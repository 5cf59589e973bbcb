"""A token bucket in a small file under the data dir, updated under an exclusive lock: shared host-wide."""

from __future__ import annotations

import fcntl
import os
import struct
import time
from pathlib import Path

from timber_tasks.stores.ratelimit.base import RateLimiter, refill

STATE = struct.Struct("<dd")  # tokens, wall-clock time of the last update


class LocalRateLimiter(RateLimiter):
    """Processes of this host that use the same data dir and name share the bucket (no server needed)."""

    def __init__(self, name: str, rate: float, burst: float, *, folder: Path) -> None:
        super().__init__(name, rate, burst)
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{name}.bucket"

    def try_acquire(self, tokens: float = 1) -> float:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.pread(fd, STATE.size, 0)
            now = time.time()  # the wall clock: one time line for every process of the host
            level, last = STATE.unpack(raw) if len(raw) == STATE.size else (self.burst, now)
            level = refill(level, last, now, self.rate, self.burst)
            wait = 0.0
            if level >= tokens:
                level -= tokens
            else:
                wait = (tokens - level) / self.rate
            os.pwrite(fd, STATE.pack(level, now), 0)
            return wait
        finally:
            os.close(fd)  # closing releases the lock
