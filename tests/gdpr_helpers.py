"""A subject with data in every store, for the GDPR tests (the stores are real: database, Redis, Celery backend)."""

from __future__ import annotations

import uuid
from typing import Any

from timber_tasks.celery_app import make_celery
from timber_tasks.features.cache import get_cached
from timber_tasks.jobs import dead_letters, outbox, persistence
from timber_tasks.settings import Settings
from timber_tasks.stores.vectors import VectorPoint, vector_store


def seed_subject(timber: Any, user: str, *, events: int = 3) -> dict[str, Any]:
    """Rows in most GDPR models, a job record, an outbox row, a dead letter, a Celery result, cache entries."""
    User, Session, Research, Data, Event, Order = (timber.get_model(n) for n in (
        "User", "Session", "StockResearchSession", "ResearchData", "TrackedEvent", "Order"))
    research_id = str(uuid.uuid4())
    with timber.db.session_scope() as session:
        session.add(User(id=user, email=f"{user}@example.com", username=user.replace("-", "_")))
        session.flush()
        session.add(Session(id=f"{user}-s", user_id=user, session_type="trading", data={"strategy": "momentum"}))
        session.add(Research(id=research_id, user_id=user, symbol="AAPL", analysis_type="dcf",
                             proprietary_analysis={"secret": f"edge of {user}"}, results={"fair": 190}))
        session.flush()
        session.add(Data(session_id=research_id, data_type="price", content={"close": 187}))
        session.add(Order(user_id=user, symbol="AAPL", order_type="market", side="buy", quantity=1))
    first_event = _next_event_id(timber)
    with timber.db.session_scope() as session:
        session.add_all([Event(id=first_event + n, user_id=user, app_name="grove", event_type="login",
                               properties={"ip": "10.0.0.1"}) for n in range(events)])
    persistence.persist(timber, "Notification", "create", {"user_id": user, "app_name": "grove",
                                                           "notification_type": "hello", "title": "Hi"},
                        idempotency_key=f"note-of:{user}")
    task_id = str(uuid.uuid4())
    with timber.db.session_scope() as session:
        outbox.add(session, task_id=task_id, task_name="timber.persistence.persist",
                   args=["Session", "update", {"id": f"{user}-s", "user_id": user}], kwargs={}, options={})
    dead_letters.record(timber.db, task_id=str(uuid.uuid4()), task_name="timber.persistence.persist",
                        args=["User", "update", {"id": user, "email": "bad"}], kwargs={},
                        error=ValueError("email is not valid"), traceback=None, attempts=1)
    app = make_celery(Settings.load(database_url=timber.settings.database_url,
                                    redis_url=timber.settings.redis_url))
    try:
        app.backend.store_result(str(uuid.uuid4()), {"model": "User", "record": {"id": user}}, "SUCCESS")
    finally:
        app.close()
    assert get_cached(timber, "User", user) is not None  # into L1, and L2 where Redis is configured
    add_vector(vector_store(timber.settings), "gdpr_notes", user, research_id)
    return {"research_id": research_id, "first_event": first_event}


def add_vector(store: Any, collection: str, user: str, key: str) -> None:
    """A point of the subject in a vector collection, as embedding jobs write them (payload user_id)."""
    store.ensure_collection(collection, 4, ["user_id"])
    store.upsert(collection, [VectorPoint(id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{collection}/{key}")),
                                          vector=[0.1, 0.2, 0.3, 0.4], payload={"user_id": user, "pk": key})])


def _next_event_id(timber: Any) -> int:
    from sqlalchemy import func, select

    Event = timber.get_model("TrackedEvent")
    with timber.db.session_scope() as session:
        return int(session.scalar(select(func.max(Event.id))) or 0) + 1
