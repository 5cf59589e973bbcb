"""Servers a fault test owns: its own redis-server and PostgreSQL on spare ports, so it may stop them.

PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres` user
(initdb and pg_ctl run through `su`). Each server keeps its files in the test's temp folder.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from .platforms import free_port

PG_BIN = Path(os.environ.get("TIMBER_PG_BIN", "/usr/lib/postgresql/15/bin"))


def _wait_port(port: int, up: bool, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.2)
            if (s.connect_ex(("127.0.0.1", port)) == 0) == up:
                return
        time.sleep(0.05)
    raise AssertionError(f"port {port} did not go {'up' if up else 'down'} within {timeout}s")


@dataclass
class OwnRedis:
    """redis-server on a spare port; `persistent` keeps an append-only file across restarts."""

    folder: Path
    persistent: bool
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.port = self.port or free_port()
        self.folder.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        persistence = (["--appendonly", "yes", "--appendfsync", "always"] if self.persistent
                       else ["--appendonly", "no", "--save", ""])
        with (self.folder / "redis.log").open("ab") as log:
            self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                          "--dir", str(self.folder), *persistence], stdout=log, stderr=log)
        _wait_port(self.port, up=True)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: with appendonly, redis flushes before it exits
            self.proc.wait(20)
        _wait_port(self.port, up=False)

    def restart(self, down_for: float) -> None:
        self.stop()
        time.sleep(down_for)
        self.start()


@dataclass
class OwnPostgres:
    """A PostgreSQL cluster in a temp folder, on a spare port."""

    folder: Path
    port: int = 0

    def __post_init__(self) -> None:
        self.port = self.port or free_port()

    def _as_owner(self, command: list[str]) -> None:
        line = " ".join(shlex.quote(part) for part in command)
        argv = ["su", "postgres", "-c", line] if os.geteuid() == 0 else ["bash", "-c", line]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise AssertionError(f"{line}: {done.stdout}{done.stderr}")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        if not (PG_BIN / "initdb").exists():
            pytest.skip(f"no PostgreSQL binaries in {PG_BIN} (set TIMBER_PG_BIN)")
        self.folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
            shutil.chown(self.folder.parent, "postgres", "postgres")
        self._as_owner([str(PG_BIN / "initdb"), "-D", str(self.folder / "data"), "-A", "trust", "-U", "postgres",
                        "--no-sync"])

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_owner([str(PG_BIN / "pg_ctl"), "-D", str(self.folder / "data"), "-o", options, "-l",
                        str(self.folder / "postgres.log"), "-w", "start"])
        _wait_port(self.port, up=True)

    def stop(self) -> None:
        with contextlib.suppress(AssertionError):
            self._as_owner([str(PG_BIN / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "fast", "-w", "stop"])
        _wait_port(self.port, up=False)

    def restart(self, down_for: float) -> None:
        self.stop()
        time.sleep(down_for)
        self.start()
