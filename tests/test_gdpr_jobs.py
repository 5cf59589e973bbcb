"""GDPR jobs on real workers (embedded broker + SQLite, Redis + PostgreSQL): export, erasure, a kill mid-erasure."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, insert, text

from timber_tasks import gdpr
from timber_tasks.gdpr.tables import ErasureRecord

from .conftest import ROOT
from .gdpr_helpers import seed_subject
from .platforms import Platform, wait_for
from .test_faults import FAST_RECOVERY, _fast_beat

ADA, BOB = "subject-ada", "subject-bob"
WORKER = {"queues": "persistence,gdpr,maintenance"}


@pytest.mark.parametrize("platform", ["embedded", "redis"], indirect=True)
def test_export_and_erasure_jobs_on_the_gdpr_queue_leave_nothing_of_the_subject(
        platform: Platform, tmp_path: Path) -> None:
    seed_subject(platform.timber, ADA)
    seed_subject(platform.timber, BOB)
    worker = platform.start_worker(**WORKER)
    # A job result in the real result backend that names the subject.
    platform.task("timber.persistence.persist").delay("Notification", "create", {
        "user_id": ADA, "app_name": "grove", "notification_type": "n", "title": "t"}).get(timeout=60)

    out = tmp_path / "exports" / "ada.zip"
    exported = platform.task("timber.gdpr.export").delay(ADA, str(out), False, "test").get(timeout=60)
    manifest = gdpr.read_manifest(out)
    assert exported["counts"] == manifest["row_counts"] and manifest["row_counts"]["Notification"] == 2
    assert "celery_results" in gdpr.verify_subject(platform.timber, ADA).found
    # The operator's way: the CLI enqueues the same jobs and follows them.
    by_cli = tmp_path / "exports" / "ada-cli.zip"
    cli = _cli(platform, tmp_path, "export", ADA, "--out", str(by_cli), "--via-worker", "--timeout", "60")
    assert cli.returncode == 0, cli.stderr
    assert gdpr.read_manifest(by_cli)["row_counts"] == manifest["row_counts"]

    erased = _cli(platform, tmp_path, "erase", ADA, "--yes", "--via-worker", "--timeout", "60")
    assert erased.returncode == 0 and "celery_results" in erased.stdout, erased.stderr
    assert gdpr.verify_subject(platform.timber, ADA).clean, gdpr.verify_subject(platform.timber, ADA).found
    assert "database:User" in gdpr.verify_subject(platform.timber, BOB).found
    refused = platform.task("timber.persistence.persist").delay("User", "create", {
        "id": "x-1", "email": "not-an-email-of-ada", "username": "x_1"})
    with pytest.raises(Exception, match="not an email"):
        refused.get(timeout=60)
    wait_for(lambda: "failed for good (ValidationError on User.email)" in platform.log_of(worker), 30, "the failure")
    log = platform.log_of(worker)  # the log says which jobs succeeded or failed, never what they held
    assert "timber.persistence.persist[" in log and " succeeded in " in log and ADA not in log
    assert "not-an-email-of-ada" not in log and "ValidationError" in log


def _cli(platform: Platform, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "timber_tasks.cli", "gdpr", *args], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, **platform.env, "PYTHONPATH": str(ROOT), "COLUMNS": "200"},
                          timeout=120)


def _ledger(platform: Platform, request_id: str) -> ErasureRecord:
    with platform.timber.db.session_scope() as session:
        record = session.get(ErasureRecord, request_id)
        assert record is not None
        return record


def _many_events(platform: Platform, user: str, n: int) -> None:
    """Enough rows that the erasure's database transaction is long enough to be caught inside."""
    Event = platform.timber.get_model("TrackedEvent")
    with platform.timber.db.engine.begin() as conn:
        conn.execute(insert(Event), [{"id": 1_000_000 + i, "user_id": user, "app_name": "grove", "event_type": "e",
                                      "properties": {"i": i}} for i in range(n)])


def _sqlite_writer_busy(path: str) -> bool:
    """Whether another connection holds SQLite's write lock (the erasure's open transaction)."""
    conn = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError:
        return True
    finally:
        conn.close()


@pytest.mark.parametrize("platform", ["embedded", "redis"], indirect=True)
def test_a_worker_killed_in_the_middle_of_an_erasure_leaves_it_to_the_redelivered_job_which_completes_it(
        platform: Platform, tmp_path: Path) -> None:
    # Redelivery within seconds: Redis's visibility timeout; on the embedded broker the outbox relay (beat).
    env = {**FAST_RECOVERY, "TIMBER_BEAT_SCHEDULE": _fast_beat(tmp_path)}
    if platform.name == "embedded":
        env["TIMBER_TASK_TIME_LIMIT"] = "60"  # the long transaction below must not hit the limit first
    seed_subject(platform.timber, ADA)
    worker = platform.start_worker(extra_env=env, **WORKER)
    request_id = gdpr.request_erasure(platform.timber, ADA, requested_by="test")

    if platform.name == "embedded":
        _many_events(platform, ADA, 150_000)
        db_file = platform.timber.db.engine.url.database
        assert db_file
        platform.task("timber.gdpr.erase").delay(request_id)
        # Inside the database part: the run has started and its transaction holds the write lock.
        wait_for(lambda: _ledger(platform, request_id).runs == 1 and _sqlite_writer_busy(db_file), 60,
                 "the erasure's open transaction", interval=0.01)
        lock = None
    else:
        # PostgreSQL: a row lock on the user makes the erasure wait inside its transaction, children already gone.
        engine = create_engine(platform.env["DATABASE_URL"])
        lock = engine.connect()
        transaction = lock.begin()
        lock.execute(text("SELECT id FROM users WHERE id = :id FOR UPDATE"), {"id": ADA})
        platform.task("timber.gdpr.erase").delay(request_id)
        # A fresh connection per look: pg_stat_activity is a snapshot within a transaction.
        waiting = text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                       "AND query LIKE 'DELETE FROM users%'")

        def erasure_waits() -> bool:
            with engine.connect() as conn:
                return bool(conn.execute(waiting).scalar())

        wait_for(erasure_waits, 30, "the erasure waiting on the user's row")
    os.killpg(worker.pid, signal.SIGKILL)  # the main process and its pool: nothing of this run goes on
    worker.wait(10)
    if lock is not None:
        transaction.rollback()
        lock.close()
        engine.dispose()
        time.sleep(0.5)  # the killed run's server session sees its client gone and rolls back

    record = _ledger(platform, request_id)
    assert record.status == "requested" and record.runs == 1, "the erasure finished before the kill"
    left = gdpr.verify_subject(platform.timber, ADA).found
    assert "database:User" in left and "database:TrackedEvent" in left  # the killed transaction rolled back

    platform.start_worker(extra_env=env, **WORKER)
    platform.start_beat(extra_env=env)
    wait_for(lambda: _ledger(platform, request_id).status == "completed", 120, "the redelivered erasure")
    assert _ledger(platform, request_id).runs >= 2
    assert gdpr.verify_subject(platform.timber, ADA).clean, gdpr.verify_subject(platform.timber, ADA).found
