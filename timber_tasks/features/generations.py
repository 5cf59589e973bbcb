"""Generation counters in a memory-mapped file: how every process on a host validates its L1 cache.

A writer bumps the slot of each key it changed after commit; a reader stores the slot's
value with its L1 entry and serves the entry only while the value is unchanged. Reading a
slot is a memory access, so checking costs no round trip, and it needs no server.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import socket
import struct
import threading
import zlib
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy.engine import make_url

GEN_SLOTS = 1 << 16  # 512 KiB file; a collision only costs a spurious miss


def database_namespace(url: str) -> str:
    """One key space per database, whoever logs in: apps connecting as different users share rows."""
    parsed = make_url(url)
    where = parsed.set(username=None, password=None, query={}).render_as_string(hide_password=False)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        where = "sqlite:" + str(Path(parsed.database).resolve())
    return "timber:" + hashlib.sha256(where.encode()).hexdigest()[:12]


class Generations:
    """Generation counters shared by every process on the host through one mmap'd file."""

    _open: dict[tuple[Path, int], Generations] = {}  # one map per file and process, not one per Timber

    @classmethod
    def at(cls, path: Path) -> Generations:
        key = (path.resolve(), os.getpid())
        if key not in cls._open:
            cls._open[key] = cls(path)
        return cls._open[key]

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.identity = f"{socket.gethostname()}:{path.resolve()}"  # who shares these counters
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        if os.fstat(self._fd).st_size < GEN_SLOTS * 8:
            os.ftruncate(self._fd, GEN_SLOTS * 8)
        self._mm = mmap.mmap(self._fd, GEN_SLOTS * 8)
        self._lock = threading.Lock()

    @staticmethod
    def slot(key: str) -> int:
        return (zlib.crc32(key.encode("utf-8")) & (GEN_SLOTS - 1)) * 8

    def read(self, offset: int) -> int:
        value: int = struct.unpack_from("<Q", self._mm, offset)[0]
        return value

    def bump(self, offsets: Iterable[int]) -> None:
        # lockf locks are per process (flock would be shared with a forked parent); the thread lock
        # covers threads of this process. Increments must not be lost, or a stale entry could match.
        with self._lock:
            fcntl.lockf(self._fd, fcntl.LOCK_EX)
            try:
                for off in set(offsets):
                    struct.pack_into("<Q", self._mm, off, self.read(off) + 1)
            finally:
                fcntl.lockf(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self._mm.close()
        os.close(self._fd)
