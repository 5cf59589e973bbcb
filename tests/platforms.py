"""Real platforms for job tests: the embedded default, PostgreSQL + Redis, PostgreSQL + RabbitMQ.

Workers, beat and Flower run as real subprocesses (`celery -A timber_tasks ...`) with the
platform's environment; the test process is the app that enqueues.
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery import Celery

from timber_tasks import runtime
from timber_tasks.celery_app import make_celery
from timber_tasks.runtime import Timber
from timber_tasks.settings import Settings

from .conftest import REDIS_DB_BASE, ROOT

TEST_REDIS = f"redis://127.0.0.1:6379/{REDIS_DB_BASE + 1}"  # this database belongs to the Celery platforms
# A RabbitMQ virtual host of its own keeps a parallel suite's queues apart (default: "/").
TEST_RABBIT = os.environ.get("TEST_RABBIT_URL", "amqp://guest:guest@127.0.0.1:5672//")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def http_get(url: str, auth: str | None = None) -> tuple[int, bytes]:
    """Status and body of a GET, with optional basic auth; (0, b"") while nothing listens."""
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class Platform:
    """One backend combination, its Celery app, its Timber, and the processes it started."""

    name: str
    env: dict[str, str]
    tmp: Path
    app: Celery = field(init=False)
    timber: Timber = field(init=False)
    processes: list[tuple[subprocess.Popen[bytes], Path]] = field(default_factory=list)

    def __post_init__(self) -> None:
        os.environ.update(self.env)
        self.timber = runtime.initialize_timber(create_tables=True)
        self.app = make_celery(Settings.load())
        self.app.set_current()
        self.app.set_default()

    def task(self, name: str) -> Any:
        return self.app.tasks[name]

    def spawn(self, args: list[str], name: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = self.tmp / f"{name}-{len(self.processes)}.log"
        env = {**os.environ, **self.env, **(extra_env or {}), "PYTHONPATH": str(ROOT)}
        with log.open("wb") as out:
            proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.processes.append((proc, log))
        return proc

    def log_of(self, proc: subprocess.Popen[bytes]) -> str:
        log = next(path for p, path in self.processes if p is proc)
        return log.read_text(errors="replace")

    def start_worker(self, queues: str = "persistence,maintenance", concurrency: int = 2,
                     extra_env: dict[str, str] | None = None, ready: bool = True) -> subprocess.Popen[bytes]:
        name = f"w{len(self.processes)}"
        proc = self.spawn([sys.executable, "-m", "celery", "-A", "timber_tasks", "worker", "-Q", queues,
                           "-c", str(concurrency), "-P", "prefork", "-n", f"{name}@%h", "-E", "-l", "INFO",
                           "--without-heartbeat", "--without-mingle", "--without-gossip"],
                          "worker", extra_env)
        if ready:
            wait_for(lambda: " ready." in self.log_of(proc) or proc.poll() is not None, 60, "worker start")
            assert proc.poll() is None, self.log_of(proc)
        return proc

    def start_beat(self, extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        return self.spawn([sys.executable, "-m", "celery", "-A", "timber_tasks", "beat", "-l", "INFO",
                           "-s", str(self.tmp / "beat-schedule")], "beat", extra_env)

    def stop(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if proc.poll() is None:
            os.kill(proc.pid, sig)  # the main process only (see stop_all)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)

    def stop_all(self) -> None:
        for proc, _ in self.processes:
            if proc.poll() is None:
                # SIGTERM to the main process only, as `docker stop` does: terminating the pool
                # children too can leave the main process waiting on a lock a dead child held.
                try:
                    os.kill(proc.pid, signal.SIGTERM)
                    proc.wait(20)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    pass
            with contextlib.suppress(ProcessLookupError):  # a SIGKILLed main process leaves orphans in its group
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def close(self) -> None:
        """Close the app's broker and result-backend connections (they would leak sockets)."""
        backend = self.app.backend
        consumer = getattr(backend, "result_consumer", None)
        if consumer is not None and getattr(consumer, "_pubsub", None) is not None:
            consumer.stop()  # AsyncResult.get() listens on its own pub/sub connection
        backend_client = getattr(backend, "client", None)
        if backend_client is not None:
            backend_client.connection_pool.disconnect()
        self.app.close()
        self.timber.db.dispose()

    def count(self, model: str) -> int:
        from sqlalchemy import func, select

        with self.timber.db.session_scope() as session:
            return int(session.scalar(select(func.count()).select_from(self.timber.get_model(model))) or 0)


def platform_env(kind: str, tmp: Path, postgres_url: str | None) -> dict[str, str]:
    env = {"TIMBER_DATA_DIR": str(tmp / "var"), "TIMBER_MODEL_CONFIG_DIRS": str(ROOT / "model_configs"),
           "TIMBER_BEAT_SCHEDULE": str(ROOT / "beat_schedule.yaml"), "TIMBER_WORKERS_DIR": str(ROOT / "workers"),
           "TIMBER_MIGRATIONS_DIR": str(tmp / "migrations")}
    if kind == "embedded":
        return env
    assert postgres_url is not None
    env["DATABASE_URL"] = postgres_url
    env["RESULT_BACKEND_URL"] = TEST_REDIS
    env["BROKER_URL"] = TEST_REDIS if kind == "redis" else TEST_RABBIT
    return env


def reset_brokers(kind: str) -> None:
    import redis

    if kind in ("redis", "rabbitmq"):
        with redis.Redis.from_url(TEST_REDIS) as client:
            client.flushdb()


def open_platform(kind: str, tmp: Path, postgres_url: str | None) -> Iterator[Platform]:
    reset_brokers(kind)
    platform = Platform(kind, platform_env(kind, tmp, postgres_url), tmp)
    if kind == "rabbitmq":
        platform.app.control.purge()
    try:
        yield platform
    finally:
        platform.stop_all()
        platform.close()
        for key in platform.env:
            os.environ.pop(key, None)
