"""The app's path: task.delay() from an app's own script does what the README says, acting for that app."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import textwrap
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from timber_tasks import runtime
from timber_tasks.errors import AccessDeniedError, ValidationError
from timber_tasks.jobs import outbox

from .conftest import ROOT
from .platforms import Platform

PERSIST = "timber.persistence.persist"


def _run_script(platform: Platform, body: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter, as an app's own script: nothing imported or configured before it."""
    env = {**os.environ, **platform.env, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(body)], cwd=platform.tmp, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_a_fresh_script_that_imports_persist_sends_through_the_timber_app(platform: Platform) -> None:
    platform.start_worker()
    done = _run_script(platform, """
        from timber_tasks.tasks.persistence import persist
        print(persist.app.main)
        result = persist.delay("User", "create", {"id": "fresh", "email": "f@example.com", "username": "fresh"})
        print(result.get(timeout=30)["record"]["username"])
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["timber_tasks", "fresh"]
    assert platform.count("User") == 1
    assert outbox.counts(platform.timber.db) == {}


def _session(user: str, session_type: str, sid: str) -> dict[str, Any]:
    return {"id": sid, "user_id": user, "session_type": session_type}


def test_a_job_acts_for_the_app_that_sent_it(platform: Platform) -> None:
    platform.start_worker()
    persist = platform.task(PERSIST)
    persist.delay("User", "create", {"id": "u1", "email": "u1@example.com", "username": "user1"}).get(timeout=30)
    # The platform app acts for every app: a research session (Grove's) is fine from it.
    persist.delay("Session", "create", _session("u1", "research", "grove-1")).get(timeout=30)
    runtime.initialize_timber(app_name="canopy", create_tables=False)  # this process is now Canopy
    with pytest.raises(AccessDeniedError, match="belongs to app 'grove'"):
        persist.delay("Session", "create", _session("u1", "research", "s2")).get(timeout=30)
    with pytest.raises(AccessDeniedError, match="belongs to app 'grove'"):
        persist.delay("ResearchReport", "create", {"user_id": "u1", "title": "t"}).get(timeout=30)
    with pytest.raises(AccessDeniedError, match="belongs to app 'grove'"):  # another app's stored row
        persist.delay("Session", "update", {"id": "grove-1", "status": "completed"}).get(timeout=30)
    with pytest.raises(AccessDeniedError, match="belongs to app 'grove'"):
        persist.delay("Session", "upsert", _session("u1", "trading", "grove-1")).get(timeout=30)
    created = persist.delay("Session", "create", _session("u1", "trading", "canopy-1")).get(timeout=30)
    assert created["record"]["session_type"] == "trading"
    with platform.timber.db.session_scope() as session:
        rows = session.execute(text("SELECT id, session_type, status FROM sessions ORDER BY id")).all()
    assert [tuple(r) for r in rows] == [("canopy-1", "trading", "active"), ("grove-1", "research", "active")]


def test_an_app_s_longest_idempotency_key_fits_the_record_and_its_job_still_runs_once(platform: Platform) -> None:
    """The app's name goes before its key: a 200-character key used to overflow the column on PostgreSQL."""
    platform.start_worker()
    persist = platform.task(PERSIST)
    runtime.initialize_timber(app_name="canopy", create_tables=False)
    key = "k" * 200  # the longest delay() takes
    event = {"app_name": "canopy", "event_type": "long-key"}
    first = persist.delay("TrackedEvent", "create", event, idempotency_key=key).get(timeout=30)
    again = persist.delay("TrackedEvent", "create", event, idempotency_key=key).get(timeout=30)
    assert again == first and first["count"] == 1
    with platform.timber.db.session_scope() as session:
        assert session.execute(text("SELECT count(*) FROM tracked_events WHERE event_type = 'long-key'")).scalar() == 1


def test_on_postgresql_a_canopy_job_writes_under_the_canopy_role(platform: Platform) -> None:
    if platform.name == "embedded":
        pytest.skip("roles and row-level security are PostgreSQL's")
    url = platform.env["DATABASE_URL"]
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:  # who wrote each row, as the database saw it
        conn.execute(text("CREATE TABLE who_wrote (id text, writer text); GRANT INSERT ON who_wrote TO PUBLIC; "
                          "CREATE FUNCTION note_writer() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                          "INSERT INTO who_wrote VALUES (NEW.id, current_user); RETURN NEW; END $$; "
                          "CREATE TRIGGER note_writer AFTER INSERT ON sessions FOR EACH ROW "
                          "EXECUTE FUNCTION note_writer()"))
    platform.start_worker()
    persist = platform.task(PERSIST)
    persist.delay("User", "create", {"id": "u1", "email": "u1@example.com", "username": "user1"}).get(timeout=30)
    persist.delay("Session", "create", _session("u1", "research", "grove-1")).get(timeout=30)
    runtime.initialize_timber(app_name="canopy", create_tables=False)
    persist.delay("Session", "create", _session("u1", "trading", "canopy-1")).get(timeout=30)
    try:
        with admin.connect() as conn:
            writers = dict(conn.execute(text("SELECT id, writer FROM who_wrote")).all())
        assert writers == {"grove-1": writers["grove-1"], "canopy-1": "timber_app_canopy"}
        assert writers["grove-1"] != "timber_app_canopy"
        for role, seen in (("timber_app_canopy", ["canopy-1"]), ("timber_app_grove", ["grove-1"])):
            with admin.connect() as conn:  # raw SQL under each app's role: each sees its own rows only
                conn.execute(text(f'SET ROLE "{role}"'))
                assert conn.execute(text("SELECT id FROM sessions ORDER BY id")).scalars().all() == seen
    finally:
        admin.dispose()


def test_without_an_app_header_a_job_acts_for_the_workers_own_app(platform: Platform) -> None:
    platform.start_worker()
    persist = platform.task(PERSIST)
    persist.delay("User", "create", {"id": "u1", "email": "u1@example.com", "username": "user1"}).get(timeout=30)
    sent = platform.app.send_task(PERSIST, ["Session", "create", _session("u1", "research", "r1")])
    assert sent.get(timeout=30)["record"]["session_type"] == "research"


def test_errors_from_a_job_keep_their_model_field_and_ids(platform: Platform) -> None:
    platform.start_worker()
    persist = platform.task(PERSIST)
    with pytest.raises(ValidationError) as info:
        persist.delay("User", "create", {"id": "u1", "email": "not-an-email", "username": "user1"}).get(timeout=30)
    assert (info.value.model, info.value.field) == ("User", "email")
    runtime.initialize_timber(app_name="canopy", create_tables=False)
    with pytest.raises(AccessDeniedError) as denied:
        persist.delay("Session", "create", _session("u1", "research", "s9")).get(timeout=30)
    assert (denied.value.model, denied.value.ids) == ("Session", "s9")


def test_readme_says_which_app_a_job_acts_for() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "acts for the app that sent it" in readme


BROKEN_MODEL = """
version: "1.0"
models:
  - name: Broken
    table_name: broken
    columns:
      - name: id
        type: NoSuchType
        primary_key: true
"""


def _celery(platform: Platform, command: list[str], extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **platform.env, "PYTHONPATH": str(ROOT), **extra_env}
    return subprocess.run([sys.executable, "-m", "celery", "-A", "timber_tasks", *command], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("fault", ["missing key", "broken model YAML"])
@pytest.mark.parametrize("process", ["worker", "beat", "flower"])
def test_a_process_whose_configuration_does_not_load_refuses_to_start(
    platform: Platform, fault: str, process: str, tmp_path: Any
) -> None:
    if platform.name == "rabbitmq":
        pytest.skip("the check runs before any broker is used: embedded and Redis cover it")
    extra = {"TIMBER_ENCRYPTION_KEYS": ""} if fault == "missing key" else {}
    if fault == "broken model YAML":
        folder = tmp_path / "broken_models"
        folder.mkdir()
        (folder / "broken.yaml").write_text(BROKEN_MODEL)
        extra["TIMBER_MODEL_CONFIG_DIRS"] = f"{platform.env['TIMBER_MODEL_CONFIG_DIRS']}{os.pathsep}{folder}"
    command = {"worker": ["worker", "-Q", "persistence", "-c", "1", "--without-mingle", "--without-gossip"],
               "beat": ["beat", "-s", str(tmp_path / "beat-schedule")],
               "flower": ["flower", "--port=0"]}[process]
    if process == "flower":
        extra["FLOWER_BASIC_AUTH"] = "admin:long-enough-secret"
    done = _celery(platform, command, extra)
    assert done.returncode != 0, done.stdout + done.stderr
    assert " ready." not in done.stdout + done.stderr
    expected = "TIMBER_ENCRYPTION_KEYS" if fault == "missing key" else "NoSuchType"
    assert f"{process} refuses to start" in done.stderr and expected in done.stderr, done.stderr
    assert "Traceback" not in done.stdout + done.stderr  # only with --debug / TIMBER_DEBUG
    assert (done.stdout + done.stderr).count(f"{process} refuses to start") == 1, done.stderr  # said once


@pytest.mark.parametrize("login", [None, "admin:", "admin:short", ":long-enough-secret", "no-colon-at-all"])
@pytest.mark.parametrize("command", ["celery", "timber-tasks"])
def test_flower_refuses_to_start_without_a_real_login_whichever_command_starts_it(
    tmp_path: Any, login: str | None, command: str
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "FLOWER_BASIC_AUTH"}
    env.update(PYTHONPATH=str(ROOT), TIMBER_DATA_DIR=str(tmp_path / "var"))
    if login is not None:
        env["FLOWER_BASIC_AUTH"] = login
    argv = ([sys.executable, "-m", "celery", "-A", "timber_tasks", "flower", "--port=0"] if command == "celery"
            else [sys.executable, "-m", "timber_tasks.cli", "flower", "--port", "0"])
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0, done.stdout + done.stderr
    assert "FLOWER_BASIC_AUTH" in done.stderr, done.stderr


@pytest.mark.parametrize("value", [dt.datetime(2024, 1, 1), {"a", "b"}, Decimal("1.5"), b"bytes", float("nan")])
def test_data_that_is_not_json_is_refused_at_delay_naming_the_field_before_anything_is_written(
    platform: Platform, value: Any
) -> None:
    persist = platform.task(PERSIST)
    with pytest.raises(ValidationError) as info:
        persist.delay("Session", "create", {"user_id": "u1", "session_type": "trading", "completed_at": value})
    assert (info.value.model, info.value.field) == ("Session", "completed_at")
    with pytest.raises(ValidationError) as batch:
        persist.delay("Session", "create", [{"user_id": "u1", "session_type": "trading"},
                                            {"user_id": "u1", "data": {"when": [value]}}])
    assert (batch.value.field, batch.value.ids) == ("data", 1) and "when.0" in str(batch.value)
    assert outbox.counts(platform.timber.db) == {}


def test_the_same_mistake_is_the_same_error_naming_the_column_through_a_job_and_a_service(
    platform: Platform
) -> None:
    platform.start_worker()
    persist = platform.task(PERSIST)
    with pytest.raises(ValidationError) as by_job:
        persist.delay("Session", "create", _session("no-such-user", "trading", "s1")).get(timeout=30)
    with pytest.raises(ValidationError) as by_service:
        platform.timber.services.sessions.create("no-such-user", "trading")
    for info in (by_job, by_service):
        assert (info.value.model, info.value.field) == ("Session", "user_id")
        assert "'no-such-user' is not the id of a row in users" in str(info.value)
    persist.delay("User", "create", {"id": "u1", "email": "u1@example.com", "username": "user1"}).get(timeout=30)
    with pytest.raises(ValidationError) as taken:
        persist.delay("User", "create", {"id": "u2", "email": "u2@example.com", "username": "user1"}).get(timeout=30)
    assert (taken.value.model, taken.value.field) == ("User", "username") and "taken" in str(taken.value)
    User = platform.timber.get_model("User")
    with pytest.raises(ValidationError) as own_session, platform.timber.db.session_scope() as session:
        session.add(User(id="u3", email="u3@example.com", username="user1"))  # an app's own ORM write
    assert (own_session.value.model, own_session.value.field) == ("User", "username")


def test_a_check_violation_names_the_column_and_its_allowed_values(platform: Platform) -> None:
    platform.start_worker()
    persist = platform.task(PERSIST)
    persist.delay("User", "create", {"id": "u1", "email": "u1@example.com", "username": "user1"}).get(timeout=30)
    with pytest.raises(ValidationError) as info:
        persist.delay("Session", "create", {**_session("u1", "trading", "s1"), "status": "paused"}).get(timeout=30)
    assert (info.value.model, info.value.field) == ("Session", "status")
    assert "allowed values: active, completed, cancelled, deleted" in str(info.value)
    assert platform.count("Session") == 0
