"""Multi-app isolation: own tables and session types plus shared ones; RLS on PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, ProgrammingError

from timber_tasks import initialize_timber
from timber_tasks.errors import AccessDeniedError, ConfigError
from timber_tasks.features.isolation import role_name

from .conftest import ROOT


def _timber(app: str, database_url: str, **kwargs: Any) -> Any:
    return initialize_timber(app_name=app, model_config_dirs=[ROOT / "model_configs"], database_url=database_url,
                             **kwargs)


def _user(timber: Any) -> str:
    User = timber.get_model("User")
    with timber.db.session_scope() as s:
        user = User(email="iso@example.com", username="iso")
        s.add(user)
        s.flush()
        return str(user.id)


def _two_apps(database_url: str) -> tuple[Any, Any, str]:
    grove = _timber("grove", database_url)
    user = _user(grove)
    grove_session = grove.services.sessions.create(user, "research", {"symbol": "AAPL"})
    canopy = _timber("canopy", database_url, create_tables=False)
    canopy.services.sessions.create(user, "trading")
    return canopy, grove_session, user


@pytest.fixture
def two_apps(database_url: str) -> tuple[Any, Any, str]:
    """A Grove session and a Canopy Timber on the same database; returns (canopy, grove session, user)."""
    return _two_apps(database_url)


def test_an_app_may_not_use_another_apps_models(database_url: str) -> None:
    canopy = _timber("canopy", database_url)
    with pytest.raises(AccessDeniedError, match="belongs to app 'grove'") as info:
        canopy.services.sessions.model("ResearchReport")
    assert info.value.model == "ResearchReport"
    assert canopy.services.sessions.model("Order").timber_spec.app == "canopy"
    assert canopy.services.sessions.model("User").timber_spec.app is None  # shared


def test_reading_another_apps_session_is_refused_not_reported_missing(two_apps: tuple[Any, Any, str]) -> None:
    canopy, grove_session, _ = two_apps
    with pytest.raises(AccessDeniedError, match="belongs to app 'grove'") as info:
        canopy.services.sessions.get(grove_session["id"])
    assert info.value.ids == grove_session["id"]
    with pytest.raises(AccessDeniedError):
        canopy.services.sessions.update(grove_session["id"], status="cancelled")


def test_listing_another_apps_session_type_is_refused_and_own_lists_hold_only_own_types(
    two_apps: tuple[Any, Any, str],
) -> None:
    canopy, _, user = two_apps
    with pytest.raises(AccessDeniedError):
        canopy.services.sessions.list_for_user(user, session_type="research")
    assert {s["session_type"] for s in canopy.services.sessions.list_for_user(user)} == {"trading"}


def test_the_platform_app_acts_for_every_app(two_apps: tuple[Any, Any, str], database_url: str) -> None:
    _, grove_session, user = two_apps
    platform = _timber("timber", database_url, create_tables=False)
    assert platform.services.sessions.get(grove_session["id"])["session_type"] == "research"
    assert len(platform.services.sessions.list_for_user(user)) == 2


def test_raw_sql_on_the_canopy_connection_cannot_see_grove_rows_or_tables(postgres_url: str) -> None:
    canopy, _, user = _two_apps(postgres_url)
    with canopy.db.engine.connect() as conn:
        assert conn.execute(text("SELECT current_user")).scalar() == "timber_app_canopy"
        assert conn.execute(text("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user")
                            ).scalar() is False
        assert conn.execute(text("SELECT session_type FROM sessions")).scalars().all() == ["trading"]
        with pytest.raises(ProgrammingError, match="permission denied"):
            conn.execute(text("SELECT * FROM research_sessions"))
    with pytest.raises(DBAPIError, match="row-level security"), canopy.db.engine.begin() as conn:
        conn.execute(text("INSERT INTO sessions (id, user_id, session_type, status, created_at) "
                          "VALUES ('x', :u, 'research', 'active', now())"), {"u": user})


def test_a_missing_role_for_an_app_is_a_clear_start_up_error(postgres_url: str) -> None:
    with pytest.raises(ConfigError, match="timber_app_canopy"):
        _timber("canopy", postgres_url, create_tables=False)
    assert _timber("canopy", postgres_url, create_tables=False, app_role=False).db.role is None


def test_restarting_leaves_policies_alone_and_a_changed_scope_replaces_them(
    postgres_url: str, write_models: Any
) -> None:
    def models(types: str) -> Any:
        return write_models({"s.yaml": f"""
            version: "1"
            models:
              - name: Job
                table_name: jobs
                app_scope: {{column: kind, values: {{canopy: [{types}]}}}}
                columns:
                  - {{name: id, type: Integer, primary_key: true}}
                  - {{name: kind, type: String(20)}}
            """})

    def policy_oid() -> Any:
        with admin.db.engine.connect() as conn:
            return conn.execute(text("SELECT oid FROM pg_policy WHERE polname = 'timber_canopy_jobs'")).scalar()

    first = models("trade")
    admin = initialize_timber(model_config_dirs=[first], database_url=postgres_url)
    before = policy_oid()
    initialize_timber(app_name="canopy", model_config_dirs=[first], database_url=postgres_url)
    assert policy_oid() == before
    canopy = initialize_timber(app_name="canopy", model_config_dirs=[models("trade, hedge")],
                               database_url=postgres_url)
    assert policy_oid() != before
    with canopy.db.engine.begin() as conn:
        conn.execute(text("INSERT INTO jobs VALUES (1, 'hedge')"))  # allowed by the new policy
        assert conn.execute(text("SELECT kind FROM jobs")).scalars().all() == ["hedge"]


def test_an_app_name_that_cannot_name_a_role_is_refused() -> None:
    assert role_name("canopy") == "timber_app_canopy"
    with pytest.raises(ConfigError, match="cannot name a PostgreSQL role"):
        role_name('x"; DROP TABLE users; --')


def test_an_app_role_can_enqueue_jobs_in_its_own_transaction(postgres_url: str) -> None:
    from sqlalchemy import select

    from timber_tasks.celery_app import make_celery
    from timber_tasks.jobs.tables import DeadLetter, OutboxMessage
    from timber_tasks.settings import Settings
    from timber_tasks.tasks import enqueue

    app = make_celery(Settings.load())  # the embedded broker: published rows are kept until done
    app.set_current()
    initialize_timber(app_name="timber", model_config_dirs=[ROOT / "model_configs"], database_url=postgres_url)
    canopy = initialize_timber(app_name="canopy", model_config_dirs=[ROOT / "model_configs"],
                               database_url=postgres_url, create_tables=False)
    assert canopy.db.role == "timber_app_canopy"
    with canopy.db.session_scope() as session:
        enqueue(session, "timber.persistence.persist", "Order", "create", {"symbol": "AAPL"})
    with canopy.db.session_scope() as session:  # written, then published (the UPDATE is granted too)
        assert [m.status for m in session.scalars(select(OutboxMessage))] == ["published"]
    with pytest.raises(ProgrammingError, match="permission denied"), canopy.db.session_scope() as session:
        session.scalars(select(DeadLetter)).all()  # the platform's own tables stay the platform's
    app.close()
