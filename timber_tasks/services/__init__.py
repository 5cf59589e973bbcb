"""Domain services on the YAML models: plain data in and out, no Celery here."""

from __future__ import annotations

from typing import Any

from timber_tasks.services.activity import NotificationService, TrackerService
from timber_tasks.services.base import BaseService, Record
from timber_tasks.services.persistence import ResearchService, SessionService
from timber_tasks.services.vectors import VectorSearchService


class Services:
    """The services of one Timber, acting for its app: `timber.services.sessions.create(...)`."""

    def __init__(self, timber: Any) -> None:
        self.sessions = SessionService(timber)
        self.research = ResearchService(timber)
        self.notifications = NotificationService(timber)
        self.tracker = TrackerService(timber)
        self.vectors = VectorSearchService(timber)


__all__ = ["BaseService", "NotificationService", "Record", "ResearchService", "Services", "SessionService",
           "TrackerService", "VectorSearchService"]
