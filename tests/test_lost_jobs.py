"""Lost jobs are found by looking at the broker and the workers, not by age: re-sent within seconds, and
a job that is merely queued, running or waiting for its retry is never sent twice."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from timber_tasks.jobs import outbox
from timber_tasks.jobs.tables import OutboxMessage
from timber_tasks.models.defaults import utcnow
from timber_tasks.tasks import relay

from .platforms import Platform, open_platform, wait_for

PERSIST = "timber.persistence.persist"


@pytest.fixture(params=["embedded", "redis"])
def tracked_platform(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Platform]:
    """The brokers on which the outbox watches every job until its effect commits."""
    postgres = request.getfixturevalue("postgres_url") if request.param == "redis" else None
    yield from open_platform(request.param, tmp_path, postgres)


def _age(platform: Platform, seconds: float) -> None:
    """Make every watched job look published `seconds` ago (older than the relay's look-after)."""
    with platform.timber.db.session_scope() as session:
        session.execute(update(OutboxMessage).values(updated_at=utcnow() - timedelta(seconds=seconds)))


def _user(n: int) -> dict[str, str]:
    return {"id": f"lost-{n}", "email": f"lost{n}@example.com", "username": f"lost_{n}"}


def test_queued_jobs_are_not_taken_for_lost(tracked_platform: Platform) -> None:
    persist = tracked_platform.task(PERSIST)
    for n in range(5):  # no worker: they wait in the queue
        persist.delay("User", "create", _user(n))
    _age(tracked_platform, 60)
    report = relay.relay(tracked_platform.app, tracked_platform.timber)
    assert report["lost"] == 0 and report["published"] == 0


def test_a_job_the_broker_lost_is_found_and_sent_again_at_once(tracked_platform: Platform) -> None:
    persist = tracked_platform.task(PERSIST)
    first = persist.delay("User", "create", _user(1))
    gone = persist.delay("User", "create", _user(2))
    with tracked_platform.app.connection_for_write() as conn:  # the broker loses everything it had
        conn.default_channel.queue_purge("persistence")
    persist.delay("User", "create", _user(3))  # and then gets one more, merely queued
    _age(tracked_platform, 60)
    report = relay.relay(tracked_platform.app, tracked_platform.timber)
    assert report["lost"] == 2, report  # the two purged, not the queued one
    with tracked_platform.timber.db.session_scope() as session:
        counts = dict(session.execute(select(OutboxMessage.task_id, OutboxMessage.publish_count)).all())
    assert counts[first.id] >= 1 and counts[gone.id] >= 1  # both sent again
    tracked_platform.start_worker()
    wait_for(lambda: tracked_platform.count("User") == 3 and outbox.counts(tracked_platform.timber.db) == {}, 60,
             "every job done once")
