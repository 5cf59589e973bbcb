"""Faults with real servers this test owns: Redis restarted (with and without persistence), PostgreSQL
stopped for seconds, workers SIGKILLed, beat running through all of it.

Each experiment sends TIMBER_FAULT_JOBS single-row persistence jobs (60 here; `make faults`
runs 2,000), injects its fault mid-run, and then waits, without anyone running the relay by
hand, until every job's effect is in the database exactly once and the outbox holds none of them. The
figures (jobs, lost, duplicated, dead-lettered, seconds to drain after the fault cleared) are
printed and, with TIMBER_FAULT_REPORT=path, appended to that file as JSON lines.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select, text

from timber_tasks.errors import EnqueueError
from timber_tasks.jobs import dead_letters, persistence

from .conftest import ROOT
from .fault_servers import OwnPostgres, OwnRedis
from .platforms import Platform, wait_for

JOBS = int(os.environ.get("TIMBER_FAULT_JOBS", "60"))
DRAIN_LIMIT = float(os.environ.get("TIMBER_FAULT_DRAIN_LIMIT", "150"))  # seconds after the fault cleared
PERSIST = "timber.persistence.persist"
RELAY = "timber.maintenance.relay_outbox"


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[OwnPostgres]:
    folder = Path(tempfile.mkdtemp(prefix="timber-faults-pg-"))  # outside pytest's root-only temp tree
    server = OwnPostgres(folder / "cluster")
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def fault_platform(request: pytest.FixtureRequest, own_postgres: OwnPostgres, tmp_path: Path
                   ) -> Iterator[tuple[Platform, OwnRedis, OwnPostgres]]:
    persistent = bool(getattr(request, "param", False))
    redis_server = OwnRedis(tmp_path / "redis", persistent=persistent)
    redis_server.start()
    database = f"faults_{os.getpid()}_{int(time.time() * 1000)}"
    admin = create_engine(own_postgres.url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)  # survives the stop
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{database}"'))
    beat_file = tmp_path / "beat.yaml"
    beat_file.write_text("entries:\n  relay-outbox:\n    task: timber.maintenance.relay_outbox\n    every: 2\n")
    env = {"TIMBER_DATA_DIR": str(tmp_path / "var"), "TIMBER_MODEL_CONFIG_DIRS": str(ROOT / "model_configs"),
           "TIMBER_WORKERS_DIR": str(ROOT / "workers"), "TIMBER_BEAT_SCHEDULE": str(beat_file),
           "DATABASE_URL": own_postgres.url.rsplit("/", 1)[0] + f"/{database}",
           "BROKER_URL": f"{redis_server.url}/0", "RESULT_BACKEND_URL": f"{redis_server.url}/1",
           # TIMBER_OUTBOX_REPUBLISH_AFTER keeps its default (31 minutes): lost jobs must come back
           # because the relay finds them lost (timber_tasks/tasks/lost_jobs.py), not by age.
           "TIMBER_REDELIVERY_SWEEP": "2", "TIMBER_RETRY_BACKOFF": "0.5", "TIMBER_TASK_MAX_RETRIES": "8"}
    platform = Platform("faults", env, tmp_path)
    try:
        yield platform, redis_server, own_postgres
    finally:
        platform.stop_all()
        platform.close()
        for key in env:
            os.environ.pop(key, None)
        redis_server.stop()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()


def _effects(platform: Platform) -> tuple[int, int]:
    """(rows, distinct jobs) of the experiment's Notification effects."""
    Notification = platform.timber.get_model("Notification")
    with platform.timber.db.session_scope() as session:
        rows, distinct = session.execute(
            select(func.count(), func.count(func.distinct(Notification.title)))
            .where(Notification.title.like("fault-%"))).one()
    return int(rows), int(distinct)


def _unfinished(platform: Platform) -> list[str]:
    """Outbox rows still watched: the experiment's jobs, and beat's relay jobs older than a minute.

    Beat sends a relay job every 2 s, so on a loaded machine a few recent ones are always in flight;
    one that has not finished in a minute is stuck, and counts."""
    from datetime import timedelta

    from timber_tasks.jobs.tables import OutboxMessage
    from timber_tasks.models.defaults import utcnow

    with platform.timber.db.session_scope() as session:
        return [m.task_id for m in session.scalars(select(OutboxMessage)) if m.task_name != RELAY
                or m.created_at < utcnow() - timedelta(seconds=60)]


def _outbox_rows(platform: Platform) -> list[tuple[Any, ...]]:
    from timber_tasks.jobs.tables import OutboxMessage

    with platform.timber.db.session_scope() as session:
        return [(m.task_id[:8], m.task_name, m.status, m.publish_count, m.args[:2] if m.args else None,
                 str(m.created_at), str(m.updated_at)) for m in session.scalars(select(OutboxMessage))]


def _safely(read: Callable[[], Any], default: Any) -> Any:
    try:
        return read()
    except Exception:  # the database may be the thing that is down
        return default


def run_experiment(platform: Platform, name: str, inject: Callable[[], None]) -> dict[str, Any]:
    """Send JOBS jobs, inject the fault once a quarter of them are done, wait for all to drain."""
    persist = platform.task(PERSIST)
    persistence.persist(platform.timber, "User", "create", {"id": "fault-user", "email": "f@example.com",
                                                            "username": "faults"}, idempotency_key="fault-user")
    cleared: list[float] = []

    def fault() -> None:
        wait_for(lambda: _safely(lambda: _effects(platform)[1], 0) >= JOBS // 4, 120, "a quarter of the jobs")
        inject()
        cleared.append(time.monotonic())

    injector = threading.Thread(target=fault, daemon=True)
    injector.start()
    for i in range(JOBS):
        while True:
            try:
                # No result kept: effects are counted in the database, and a pending result would
                # listen on the Redis this test restarts.
                persist.apply_async(["Notification", "create", {"user_id": "fault-user", "app_name": "grove",
                                                                "notification_type": "fault", "title": f"fault-{i}"}],
                                    {"idempotency_key": f"fault-{i}"}, ignore_result=True)
                break
            except EnqueueError:  # the database is down: the job was not sent, as documented; send it again
                time.sleep(0.2)
    injector.join(180)
    assert cleared, "the fault was never injected"

    def drained() -> bool:
        return _safely(lambda: _effects(platform)[1] == JOBS and not _unfinished(platform), False)

    try:
        wait_for(drained, DRAIN_LIMIT, f"{name}: every job done and the outbox empty", interval=0.5)
    except AssertionError as exc:  # say where the jobs are, so one failing run in N can be read
        done = _safely(lambda: _effects(platform), None)
        left = _safely(lambda: _outbox_rows(platform), None)
        logs = "\n".join(f"--- {path.name}\n" + "\n".join(
            line for line in path.read_text(errors="replace").splitlines()
            if "WARNING" in line or "ERROR" in line or "CRITICAL" in line)[-4000:]
            for proc, path in platform.processes)
        raise AssertionError(f"{exc}: (rows, distinct jobs) done {done}, outbox {left}\n{logs}") from None
    rows, distinct = _effects(platform)
    report = {"fault": name, "jobs": JOBS, "lost": JOBS - distinct, "duplicated": rows - distinct,
              "dead_lettered": len(dead_letters.list_letters(platform.timber.db, limit=100_000)),
              "drain_seconds": round(time.monotonic() - cleared[0], 1)}
    print(json.dumps(report))
    if os.environ.get("TIMBER_FAULT_REPORT"):
        with open(os.environ["TIMBER_FAULT_REPORT"], "a") as out:
            out.write(json.dumps(report) + "\n")
    return report


def _check(report: dict[str, Any], platform: Platform, beat: Any) -> None:
    assert report["lost"] == 0 and report["duplicated"] == 0, report
    assert report["dead_lettered"] == 0, report
    assert beat.poll() is None, platform.log_of(beat)  # beat ran through it all


@pytest.mark.parametrize("fault_platform", [False, True], ids=["without persistence", "with persistence"],
                         indirect=True)
def test_a_redis_restart_mid_run_loses_no_job_and_beat_keeps_running(
    fault_platform: tuple[Platform, OwnRedis, OwnPostgres]
) -> None:
    platform, redis_server, _ = fault_platform
    platform.start_worker(concurrency=2)
    beat = platform.start_beat()
    report = run_experiment(platform, f"redis restart ({'with' if redis_server.persistent else 'without'} "
                                      "persistence)", lambda: redis_server.restart(down_for=3))
    _check(report, platform, beat)


def test_postgresql_stopped_for_seconds_mid_run_loses_no_job(
    fault_platform: tuple[Platform, OwnRedis, OwnPostgres]
) -> None:
    platform, _, postgres = fault_platform
    platform.start_worker(concurrency=2)
    beat = platform.start_beat()
    report = run_experiment(platform, "postgresql stopped 5 s", lambda: postgres.restart(down_for=5))
    _check(report, platform, beat)


def test_workers_sigkilled_repeatedly_lose_no_job_and_duplicate_none(
    fault_platform: tuple[Platform, OwnRedis, OwnPostgres]
) -> None:
    platform, _, _ = fault_platform
    workers = [platform.start_worker(concurrency=2)]
    beat = platform.start_beat()

    def kill_four_times() -> None:
        for _ in range(4):
            os.killpg(workers[-1].pid, signal.SIGKILL)
            workers[-1].wait(10)
            time.sleep(0.5)
            workers.append(platform.start_worker(concurrency=2))
            time.sleep(1)

    report = run_experiment(platform, "worker SIGKILL x4", kill_four_times)
    _check(report, platform, beat)


def test_delay_while_postgresql_is_down_raises_an_enqueue_error_and_sends_nothing(
    fault_platform: tuple[Platform, OwnRedis, OwnPostgres]
) -> None:
    platform, redis_server, postgres = fault_platform
    import redis

    persist = platform.task(PERSIST)
    postgres.stop()
    try:
        with pytest.raises(EnqueueError, match="was not enqueued.*nothing was sent"):
            persist.delay("User", "create", {"id": "down", "email": "d@example.com", "username": "down"})
    finally:
        postgres.start()
    with redis.Redis.from_url(f"{redis_server.url}/0") as client:
        assert client.llen("persistence") == 0


def test_workers_and_beat_starting_together_on_a_fresh_database_create_the_tables_once(
    own_postgres: OwnPostgres, tmp_path: Path
) -> None:
    import subprocess
    import sys

    database = f"race_{os.getpid()}_{int(time.time() * 1000)}"
    admin = create_engine(own_postgres.url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)  # survives the stop
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{database}"'))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TIMBER_MODEL_CONFIG_DIRS": str(ROOT / "model_configs"),
           "DATABASE_URL": own_postgres.url.rsplit("/", 1)[0] + f"/{database}", "TIMBER_DATA_DIR": str(tmp_path)}
    code = "from timber_tasks import initialize_timber; initialize_timber(create_tables=True)"
    try:
        starters = [subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE, text=True)
                    for _ in range(4)]
        errors = [p.communicate(timeout=120)[1] for p in starters]
        assert [p.returncode for p in starters] == [0, 0, 0, 0], errors
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()
