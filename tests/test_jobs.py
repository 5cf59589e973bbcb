"""Persistence jobs on real workers, on every platform: effects once, bad input dead-lettered."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from typing import Any

import pytest
from celery.exceptions import TimeoutError as CeleryTimeout
from sqlalchemy import select

from timber_tasks import TimberError
from timber_tasks.jobs import dead_letters, outbox
from timber_tasks.jobs.tables import JobRecord, OutboxMessage
from timber_tasks.tasks import enqueue

from .conftest import ROOT
from .platforms import Platform, wait_for

PERSIST = "timber.persistence.persist"


def _user(n: int | str) -> dict[str, Any]:
    return {"id": f"user-{n}", "email": f"user{n}@example.com", "username": f"user_{n}"}


def test_create_update_upsert_and_delete_run_on_a_worker(platform: Platform) -> None:
    platform.start_worker()
    persist = platform.task(PERSIST)
    created = persist.delay("User", "create", _user(1)).get(timeout=30)
    assert created["record"]["username"] == "user_1" and created["operation"] == "create"
    updated = persist.delay("User", "update", {"id": "user-1", "username": "renamed"}).get(timeout=30)
    assert updated["record"]["username"] == "renamed"
    upserted = persist.delay("User", "upsert", [_user(1), _user(2)]).get(timeout=30)
    assert upserted["count"] == 2
    with platform.timber.db.session_scope() as session:
        User = platform.timber.get_model("User")
        assert {u.username for u in session.scalars(select(User))} == {"user_1", "user_2"}
    assert persist.delay("User", "delete", {"id": "user-2"}).get(timeout=30)["count"] == 1
    assert platform.count("User") == 1
    with platform.timber.db.session_scope() as session:
        left = sorted(session.scalars(select(OutboxMessage.task_name)))
    # Every finished job left the outbox; the user's delete cascaded into the research models, whose
    # vectors a reconcile job brings up to date on the embeddings pool (not started here).
    assert left == ["timber.embeddings.sync_model"] * len(left) and len(left) <= 2, left


def test_a_batch_job_writes_every_row(platform: Platform) -> None:
    platform.start_worker()
    rows = [{"symbol": "AAPL", "interval": "1d", "ts": f"2024-01-{d:02d}T00:00:00", "open": "1.5", "high": "2",
             "low": "1", "close": "1.75", "volume": 1000 + d} for d in range(1, 29)]
    result = platform.task(PERSIST).delay("OhlcvPrice", "upsert", rows).get(timeout=30)
    assert result["count"] == 28 and platform.count("OhlcvPrice") == 28
    rows[0]["close"] = "9.5"
    platform.task(PERSIST).delay("OhlcvPrice", "upsert", rows[:1]).get(timeout=30)
    with platform.timber.db.session_scope() as session:
        Price = platform.timber.get_model("OhlcvPrice")
        first = session.scalars(select(Price).order_by(Price.ts)).first()
        assert str(first.close).startswith("9.5")
    assert platform.count("OhlcvPrice") == 28


def test_the_same_idempotency_key_twice_gives_one_row_and_the_first_result(platform: Platform) -> None:
    platform.start_worker()
    persist = platform.task(PERSIST)
    persist.delay("User", "create", {"id": "u", "email": "u@e.co", "username": "uuu"}).get(timeout=30)

    def notify(title: str, key: str) -> Any:
        return persist.delay("Notification", "create", {"user_id": "u", "app_name": "grove",
                                                         "notification_type": "x", "title": title},
                             idempotency_key=key)

    first = notify("hello", "notify-1").get(timeout=30)
    assert notify("changed payload", "notify-1").get(timeout=30) == first  # a rerun is a no-op
    # Sent together, the two run side by side on the two worker processes: still one effect.
    racing = [notify(f"race {n}", "notify-2") for n in range(2)]
    assert racing[0].get(timeout=30) == racing[1].get(timeout=30)
    assert platform.count("Notification") == 2
    with platform.timber.db.session_scope() as session:
        assert session.get(JobRecord, "notify-1").result == first


@pytest.mark.parametrize(("args", "message"), [
    (("Usr", "create", {}), "model 'Usr' is not registered. Did you mean: User"),
    (("User", "create", {"email": "not-an-email", "username": "abc"}), "User.email: 'not-an-email' is not an email"),
    (("Nope", "create", {}), "model 'Nope' is not registered"),  # (an unknown operation fails at delay())
    (("User", "update", {"id": "nobody", "username": "abc"}), "User: no record with {'id': 'nobody'}"),
])
def test_a_malformed_payload_lands_in_the_dead_letter_table_with_a_clear_error(
    platform: Platform, args: tuple[Any, ...], message: str
) -> None:
    platform.start_worker()
    result = platform.task(PERSIST).apply_async(args)
    with pytest.raises(TimberError) as info:  # the caller gets our error type back, message intact
        result.get(timeout=30)
    assert message in str(info.value) and "<class" not in str(info.value)
    letters = wait_for(lambda: dead_letters.list_letters(platform.timber.db), 10, "the dead letter")
    assert letters[0].task_id == result.id and message in letters[0].error
    assert letters[0].attempts == 1 and list(letters[0].args) == list(args)  # failed at once, payload kept


def test_a_dead_letter_can_be_retried_once_its_cause_is_fixed(platform: Platform) -> None:
    platform.start_worker()
    persist = platform.task(PERSIST)
    failed = persist.delay("User", "update", {"id": "user-7", "username": "seven"})
    with pytest.raises(Exception, match="no record"):
        failed.get(timeout=30)
    letter = wait_for(lambda: dead_letters.list_letters(platform.timber.db), 10, "the dead letter")[0]
    listing = _cli(platform, "dlq", "list")
    assert f"│ {letter.id} " in listing and "RecordNotFoundError" in listing and "user-7" in listing
    persist.delay("User", "create", _user(7)).get(timeout=30)
    retry = _cli(platform, "dlq", "retry", str(letter.id))
    retried_id = retry.split("as task ")[1].split()[0]
    assert platform.app.AsyncResult(retried_id).get(timeout=30)["record"]["username"] == "seven"
    assert dead_letters.list_letters(platform.timber.db) == []
    assert "0 dead letter(s)" in _cli(platform, "dlq", "list")


def _cli(platform: Platform, *args: str) -> str:
    """Run `timber-tasks ARGS` as compliance staff would, against this platform."""
    result = subprocess.run([sys.executable, "-m", "timber_tasks.cli", *args], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, env={**os.environ, **platform.env, "COLUMNS": "250"})
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_enqueue_inside_a_transaction_publishes_only_after_commit(platform: Platform) -> None:
    platform.start_worker()
    User = platform.timber.get_model("User")
    with platform.timber.db.session_scope() as session:
        session.add(User(**_user(9)))
        task_id = enqueue(session, PERSIST, "Session", "create",
                          {"user_id": "user-9", "session_type": "research"})
    assert platform.app.AsyncResult(task_id).get(timeout=30)["record"]["session_type"] == "research"
    with pytest.raises(RuntimeError), platform.timber.db.session_scope() as session:
        rolled_back = enqueue(session, PERSIST, "Session", "create", {"user_id": "user-9", "session_type": "x"})
        raise RuntimeError("the app's transaction fails")
    with pytest.raises(CeleryTimeout):
        platform.app.AsyncResult(rolled_back).get(timeout=3)
    assert platform.count("Session") == 1 and outbox.counts(platform.timber.db) == {}


def test_a_job_enqueued_while_the_broker_is_down_is_published_by_the_relay(platform: Platform) -> None:
    if platform.name == "embedded":
        pytest.skip("the embedded broker is a folder on this disk: it cannot be down apart from the database")
    from timber_tasks.celery_app import make_celery
    from timber_tasks.settings import Settings
    from timber_tasks.tasks import relay

    down = make_celery(Settings.load(broker_url="redis://127.0.0.1:1/0"))
    down.set_current()
    User = platform.timber.get_model("User")
    with platform.timber.db.session_scope() as session:
        session.add(User(**_user(5)))
        task_id = enqueue(session, PERSIST, "User", "update", {"id": "user-5", "username": "from_outbox"})
    assert outbox.counts(platform.timber.db) == {"pending": 1}  # committed, kept, not lost
    down.close()
    platform.app.set_current()
    platform.start_worker()
    with platform.timber.db.session_scope() as session:  # age the row past the committer's grace period
        row = session.get(outbox.OutboxMessage, task_id)
        row.updated_at = row.updated_at.replace(year=2000)
    assert relay.relay(platform.app, platform.timber)["published"] == 1
    assert platform.app.AsyncResult(task_id).get(timeout=30)["record"]["username"] == "from_outbox"
    assert outbox.counts(platform.timber.db) == {}


def test_unique_keys_make_each_job_an_independent_effect(platform: Platform) -> None:
    platform.start_worker()
    persist = platform.task(PERSIST)
    results = [persist.delay("User", "create", _user(n), idempotency_key=str(uuid.uuid4())) for n in range(20)]
    assert len({r.get(timeout=60)["record"]["id"] for r in results}) == 20
