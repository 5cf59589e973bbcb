"""Notifications (shared across apps, each naming the app that raised it) and tracked events."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from timber_tasks.models.defaults import utcnow
from timber_tasks.models.records import to_jsonable
from timber_tasks.services.base import BaseService, Record


class NotificationService(BaseService):
    """Create notifications, list a user's unread ones and mark them read."""

    def create(self, user_id: str, notification_type: str, title: str, message: str | None = None,
               data: dict[str, Any] | None = None) -> Record:
        Notification = self.model("Notification")
        self.require(Notification, "user_id", user_id)
        self.require(Notification, "notification_type", notification_type)
        self.require(Notification, "title", title)
        return self.insert(Notification, {"user_id": user_id, "app_name": self.app,
                                          "notification_type": notification_type, "title": title,
                                          "message": message, "data": data})

    def get(self, notification_id: str) -> Record:
        return self.fetch(self.model("Notification"), notification_id)

    def list_unread(self, user_id: str, *, limit: int = 100) -> list[Record]:
        """The user's unread notifications of every app, newest first (seed 003: users see them all)."""
        Notification = self.model("Notification")
        self.require(Notification, "user_id", user_id)
        query = (select(Notification)
                 .where(Notification.user_id == user_id, Notification.is_read.is_(False))
                 .order_by(Notification.created_at.desc(), Notification.id).limit(limit))
        with self.unit(Notification, user_id) as db:
            return [to_jsonable(n) for n in db.scalars(query)]

    def mark_read(self, notification_id: str, user_id: str) -> Record:
        Notification = self.model("Notification")
        self.require(Notification, "user_id", user_id)
        self.owned_by(Notification, self.fetch(Notification, notification_id), user_id, notification_id)
        return self.modify(Notification, notification_id, {"is_read": True, "read_at": utcnow()})

    def mark_all_read(self, user_id: str) -> int:
        """Mark every unread notification of the user read; returns how many."""
        Notification = self.model("Notification")
        self.require(Notification, "user_id", user_id)
        stmt = (update(Notification)
                .where(Notification.user_id == user_id, Notification.is_read.is_(False))
                .values(is_read=True, read_at=utcnow()))
        with self.unit(Notification, user_id) as db:
            # An ORM-enabled bulk UPDATE: the cache listener invalidates the whole model on commit.
            return int(db.execute(stmt).rowcount or 0)  # type: ignore[attr-defined]


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
