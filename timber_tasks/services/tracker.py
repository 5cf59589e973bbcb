"""Tracked user events, for analytics across apps."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from timber_tasks.models.records import to_jsonable
from timber_tasks.services.base import BaseService, Record


class TrackerService(BaseService):
    """Record events with the acting app's name; list them per user."""

    def track(self, user_id: str, event_type: str, properties: dict[str, Any] | None = None) -> Record:
        Event = self.model("TrackedEvent")
        self.require(Event, "user_id", user_id)
        self.require(Event, "event_type", event_type)
        return self.insert(Event, {"user_id": user_id, "app_name": self.app, "event_type": event_type,
                                   "properties": properties})

    def list_events(self, user_id: str, *, event_type: str | None = None, limit: int = 100) -> list[Record]:
        Event = self.model("TrackedEvent")
        self.require(Event, "user_id", user_id)
        query = select(Event).where(Event.user_id == user_id)
        if event_type is not None:
            query = query.where(Event.event_type == event_type)
        query = query.order_by(Event.occurred_at.desc(), Event.id.desc()).limit(limit)
        with self.unit(Event, user_id) as db:
            return [to_jsonable(e) for e in db.scalars(query)]
