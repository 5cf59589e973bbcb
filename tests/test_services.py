"""The domain services on the shipped models, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select, text

from timber_tasks import initialize_timber
from timber_tasks.errors import (
    AccessDeniedError,
    DatabaseError,
    NotFoundError,
    ServiceError,
    TimberError,
    ValidationError,
)

from .conftest import ROOT


def _timber(app: str, database_url: str, create_tables: bool = True) -> Any:
    return initialize_timber(app_name=app, model_config_dirs=[ROOT / "model_configs"], database_url=database_url,
                             create_tables=create_tables)


def _user(timber: Any, name: str = "ada") -> str:
    User = timber.get_model("User")
    with timber.db.session_scope() as s:
        user = User(email=f"{name}@example.com", username=name)
        s.add(user)
        s.flush()
        return str(user.id)


def _count(timber: Any, model: str) -> int:
    with timber.db.session_scope() as s:
        return int(s.scalar(select(func.count()).select_from(timber.get_model(model))))


@pytest.fixture
def canopy(database_url: str) -> Any:
    return _timber("canopy", database_url)


def test_a_session_goes_through_its_whole_lifecycle(canopy: Any) -> None:
    sessions, user = canopy.services.sessions, _user(canopy)
    created = sessions.create(user, "trading", {"strategy": "momentum"})
    assert created["status"] == "active" and created["data"] == {"strategy": "momentum"}
    assert sessions.get(created["id"]) == created
    assert sessions.update(created["id"], data={"strategy": "mean reversion"})["data"] == {"strategy": "mean reversion"}
    done = sessions.complete(created["id"], {"pnl": 12.5})
    assert done["status"] == "completed" and done["completed_at"] is not None
    assert done["data"] == {"strategy": "mean reversion", "result": {"pnl": 12.5}}
    sessions.delete(created["id"], user)
    with pytest.raises(NotFoundError):
        sessions.get(created["id"])
    assert sessions.get(created["id"], include_deleted=True)["deleted_at"] is not None
    sessions.delete(created["id"], user, hard=True)
    with pytest.raises(NotFoundError) as info:
        sessions.get(created["id"], include_deleted=True)
    assert info.value.model == "Session" and info.value.ids == created["id"]
    assert _count(canopy, "Session") == 0


def test_sessions_are_listed_by_user_with_type_and_status_filters(canopy: Any) -> None:
    sessions, ada, bob = canopy.services.sessions, _user(canopy), _user(canopy, "bob")
    a = sessions.create(ada, "trading")
    b = sessions.create(ada, "paper_trading")
    sessions.create(bob, "trading")
    sessions.complete(a["id"])
    deleted = sessions.create(ada, "trading")
    sessions.delete(deleted["id"], ada)
    assert {s["id"] for s in sessions.list_for_user(ada)} == {a["id"], b["id"]}
    assert [s["id"] for s in sessions.list_for_user(ada, session_type="paper_trading")] == [b["id"]]
    assert [s["id"] for s in sessions.list_for_user(ada, status="completed")] == [a["id"]]
    assert len(sessions.list_for_user(ada, include_deleted=True)) == 3
    assert len(sessions.list_for_user(ada, limit=1)) == 1


def test_bad_input_is_rejected_before_anything_is_written(canopy: Any) -> None:
    sessions, user = canopy.services.sessions, _user(canopy)
    with pytest.raises(ValidationError, match=r"Session\.user_id"):
        sessions.create("", "trading")
    with pytest.raises(ValidationError, match="unknown session_type 'bogus'"):
        sessions.create(user, "bogus")
    with pytest.raises(AccessDeniedError, match="belongs to app 'grove'"):
        sessions.create(user, "research")
    created = sessions.create(user, "trading")
    with pytest.raises(ValidationError, match="status") as info:
        sessions.update(created["id"], status="paused")
    assert info.value.ids == created["id"]
    assert _count(canopy, "Session") == 1 and sessions.get(created["id"])["status"] == "active"


def test_another_users_session_cannot_be_deleted(canopy: Any) -> None:
    sessions, ada, bob = canopy.services.sessions, _user(canopy), _user(canopy, "bob")
    created = sessions.create(ada, "trading")
    with pytest.raises(AccessDeniedError) as info:
        sessions.delete(created["id"], bob, hard=True)
    assert info.value.model == "Session" and info.value.ids == created["id"]
    assert sessions.get(created["id"])["status"] == "active"


def test_a_database_refusal_is_a_validation_error_naming_the_model_and_column(canopy: Any) -> None:
    with pytest.raises(ValidationError) as info:
        canopy.services.sessions.create("no-such-user", "trading")
    assert (info.value.model, info.value.field) == ("Session", "user_id")
    assert "'no-such-user' is not the id of a row in users" in str(info.value)


def test_every_service_error_shares_the_project_root() -> None:
    for cls in (ValidationError, NotFoundError, AccessDeniedError, DatabaseError):
        assert issubclass(cls, TimberError)
    assert issubclass(NotFoundError, ServiceError) and issubclass(AccessDeniedError, PermissionError)


def test_research_is_saved_and_listed_with_the_analysis_encrypted_at_rest(canopy: Any) -> None:
    research, user = canopy.services.research, _user(canopy)
    session = research.start(user, "AAPL", "dcf", summary="cheap", proprietary_analysis={"fair_value": 231.4})
    assert research.get_session(session["id"])["proprietary_analysis"] == {"fair_value": 231.4}
    with canopy.db.engine.connect() as conn:
        raw = conn.execute(text("SELECT proprietary_analysis FROM stock_research_sessions")).scalar()
    assert "231.4" not in str(raw) and str(raw).startswith("gAAAAA")
    research.save_research(session["id"], "price", {"close": 230.1}, source="file")
    research.save_research(session["id"], "news", {"headline": "up"})
    assert {r["data_type"] for r in research.list_research(session["id"])} == {"price", "news"}
    assert [r["content"] for r in research.list_research(session["id"], data_type="news")] == [{"headline": "up"}]
    assert [s["id"] for s in research.list_sessions(user, symbol="AAPL")] == [session["id"]]
    assert research.list_sessions(user, symbol="MSFT") == []
    updated = research.update_session(session["id"], proprietary_analysis={"fair_value": 250})
    assert research.get_session(session["id"])["proprietary_analysis"] == updated["proprietary_analysis"]


def test_research_input_is_checked_before_writing(canopy: Any) -> None:
    research, user = canopy.services.research, _user(canopy)
    with pytest.raises(ValidationError, match=r"StockResearchSession\.symbol"):
        research.start(user, "not a symbol", "dcf")
    with pytest.raises(NotFoundError, match="StockResearchSession"):
        research.save_research("missing", "price", {})
    assert _count(canopy, "StockResearchSession") == 0 and _count(canopy, "ResearchData") == 0


def test_notifications_are_created_listed_unread_and_marked_read(database_url: str) -> None:
    canopy = _timber("canopy", database_url)
    user = _user(canopy)
    notes = canopy.services.notifications
    first = notes.create(user, "order_filled", "Order filled", "AAPL x 10", {"order_id": "o-1"})
    assert first["app_name"] == "canopy" and first["is_read"] is False
    grove = _timber("grove", database_url, create_tables=False)
    grove.services.notifications.create(user, "research_complete", "Report ready")
    unread = notes.list_unread(user)
    assert {n["app_name"] for n in unread} == {"canopy", "grove"}  # users see every app's notifications
    read = notes.mark_read(first["id"], user)
    assert read["is_read"] is True and read["read_at"] is not None
    assert [n["title"] for n in notes.list_unread(user)] == ["Report ready"]
    assert notes.mark_all_read(user) == 1 and notes.list_unread(user) == []
    with pytest.raises(AccessDeniedError):
        notes.mark_read(first["id"], _user(canopy, "eve"))
    with pytest.raises(ValidationError, match=r"Notification\.title"):
        notes.create(user, "x", " ")


def test_events_are_tracked_with_the_acting_app(canopy: Any) -> None:
    tracker, user = canopy.services.tracker, _user(canopy)
    tracker.track(user, "login", {"ip": "10.0.0.1"})
    tracker.track(user, "order_placed", {"symbol": "AAPL"})
    events = tracker.list_events(user)
    assert [e["event_type"] for e in events] == ["order_placed", "login"]
    assert {e["app_name"] for e in events} == {"canopy"} and all(isinstance(e["id"], int) for e in events)
    assert [e["properties"] for e in tracker.list_events(user, event_type="login")] == [{"ip": "10.0.0.1"}]
    with pytest.raises(ValidationError, match=r"TrackedEvent\.event_type"):
        tracker.track(user, "")


def test_a_row_written_under_an_unknown_key_is_a_decryption_error_through_the_services(database_url: str) -> None:
    from cryptography.fernet import Fernet

    from timber_tasks.errors import DecryptionError

    canopy = _timber("canopy", database_url)
    session = canopy.services.research.start(_user(canopy), "AAPL", "dcf", proprietary_analysis={"x": 1})
    stranger = initialize_timber(app_name="canopy", model_config_dirs=[ROOT / "model_configs"],
                                 database_url=database_url, create_tables=False,
                                 encryption_keys=Fernet.generate_key().decode())
    with pytest.raises(DecryptionError) as info:
        stranger.services.research.get_session(session["id"])
    assert (info.value.model, info.value.field, info.value.row_id) == (
        "StockResearchSession", "proprietary_analysis", session["id"])
