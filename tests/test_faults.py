"""Faults on real processes: a worker killed mid-batch, transient database faults, the retry cap."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text

from timber_tasks.jobs import dead_letters, outbox
from timber_tasks.jobs.tables import JobRecord

from .platforms import Platform, wait_for

PERSIST = "timber.persistence.persist"

# Short limits so a lost job comes back within seconds: Redis redelivers unacked jobs after the
# visibility timeout; on the embedded broker the outbox relay (beat, every second) republishes.
FAST_RECOVERY = {"TIMBER_VISIBILITY_TIMEOUT": "6", "TIMBER_TASK_TIME_LIMIT": "5", "TIMBER_REDELIVERY_SWEEP": "1",
                 "TIMBER_OUTBOX_REPUBLISH_AFTER": "4"}


def _fast_beat(tmp: Path) -> str:
    path = tmp / "beat.yaml"
    path.write_text("entries:\n  relay-outbox:\n    task: timber.maintenance.relay_outbox\n    every: 1\n")
    return str(path)


def test_killing_a_workers_main_process_mid_batch_loses_no_job_and_duplicates_none(
    platform: Platform, tmp_path: Path
) -> None:
    env = {**FAST_RECOVERY, "TIMBER_BEAT_SCHEDULE": _fast_beat(tmp_path)}
    persist = platform.task(PERSIST)
    jobs = 120
    # TrackedEvent has an autoincrement key and no natural unique column: a job run twice would
    # show up as an extra row, so the count is a real test of effect-once.
    for n in range(jobs):
        persist.delay("TrackedEvent", "create", {"app_name": "grove", "event_type": f"e{n}"},
                      idempotency_key=f"kill-{n}")
    worker = platform.start_worker(extra_env=env)
    wait_for(lambda: platform.count("TrackedEvent") >= 10, 90, "the first jobs")
    platform.stop(worker, signal.SIGKILL)
    assert platform.count("TrackedEvent") < jobs, "the batch finished before the kill: nothing was tested"

    platform.start_worker(extra_env=env)
    platform.start_beat(extra_env=env)
    wait_for(lambda: platform.count("TrackedEvent") == jobs and not outbox.counts(platform.timber.db), 180,
             f"all {jobs} jobs done and the outbox empty")
    time.sleep(5)  # a duplicate still in flight would land now
    Event = platform.timber.get_model("TrackedEvent")
    with platform.timber.db.session_scope() as session:
        assert session.scalar(select(func.count(func.distinct(Event.event_type)))) == jobs
        assert session.scalar(select(func.count()).select_from(Event)) == jobs
        assert session.scalar(select(func.count()).select_from(JobRecord)) == jobs
    assert dead_letters.list_letters(platform.timber.db) == []


def _lock_timeout_env(platform: Platform) -> dict[str, str]:
    # A worker whose row locks give up after 300 ms: a held lock becomes a transient fault (55P03).
    return {"DATABASE_URL": platform.env["DATABASE_URL"] + "?options=-c%20lock_timeout%3D300",
            "TIMBER_RETRY_BACKOFF": "0.3"}


@pytest.fixture
def locked_user(platform: Platform):  # type: ignore[no-untyped-def]
    """A user row locked by another transaction for as long as the test keeps it."""
    if platform.name != "redis":
        pytest.skip("row lock timeouts are a PostgreSQL fault; one broker is enough to show the retry")
    platform.task(PERSIST).delay("User", "create", {"id": "locked", "email": "l@e.co", "username": "locked"})
    engine = create_engine(platform.env["DATABASE_URL"])
    conn = engine.connect()
    yield conn
    conn.close()
    engine.dispose()


def test_a_transient_fault_is_retried_with_backoff_until_it_clears(platform: Platform, locked_user) -> None:  # type: ignore[no-untyped-def]
    platform.start_worker(extra_env=_lock_timeout_env(platform))
    wait_for(lambda: platform.count("User") == 1, 30, "the user")
    transaction = locked_user.begin()
    locked_user.execute(text("SELECT id FROM users WHERE id = 'locked' FOR UPDATE"))
    result = platform.task(PERSIST).delay("User", "update", {"id": "locked", "username": "unlocked"})
    wait_for(lambda: platform.app.AsyncResult(result.id).state == "RETRY", 30, "a retry")
    transaction.rollback()  # the fault clears
    assert result.get(timeout=60)["record"]["username"] == "unlocked"
    assert platform.app.AsyncResult(result.id).retries >= 1
    assert dead_letters.list_letters(platform.timber.db) == []


def test_a_fault_that_never_clears_stops_at_the_retry_cap_in_the_dead_letter_table(
    platform: Platform, locked_user  # type: ignore[no-untyped-def]
) -> None:
    platform.start_worker(extra_env={**_lock_timeout_env(platform), "TIMBER_TASK_MAX_RETRIES": "2"})
    wait_for(lambda: platform.count("User") == 1, 30, "the user")
    transaction = locked_user.begin()
    locked_user.execute(text("SELECT id FROM users WHERE id = 'locked' FOR UPDATE"))
    result = platform.task(PERSIST).delay("User", "update", {"id": "locked", "username": "never"})
    with pytest.raises(Exception, match="lock"):
        result.get(timeout=60)
    transaction.rollback()
    letter = wait_for(lambda: dead_letters.list_letters(platform.timber.db), 10, "the dead letter")[0]
    assert letter.attempts == 3 and letter.task_id == result.id and "lock" in letter.error.lower()
