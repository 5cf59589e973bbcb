"""Sessions of every app, told apart by session_type (seeds 001 and 003)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from timber_tasks.errors import NotFoundError
from timber_tasks.features import isolation
from timber_tasks.models.factory import utcnow
from timber_tasks.models.records import to_jsonable
from timber_tasks.services.base import BaseService, Record

STATUSES = ("active", "completed", "cancelled", "deleted")


class SessionService(BaseService):
    """Create, read, list, update, complete and delete the app's sessions."""

    model_name = "Session"

    def create(self, user_id: str, session_type: str, data: dict[str, Any] | None = None) -> Record:
        """A new active session; another app's session_type is refused, an unknown one invalid."""
        Session = self.model(self.model_name)
        self.require(Session, "user_id", user_id)
        self.require(Session, "session_type", session_type)
        isolation.check_scope(self.app, Session, session_type)
        record = self.insert(Session, {"user_id": user_id, "session_type": session_type, "data": data or {},
                                       "status": "active"})
        self.log.info("created session %s (%s) for user %s", record["id"], session_type, user_id)
        return record

    def get(self, session_id: str, *, include_deleted: bool = False) -> Record:
        Session = self.model(self.model_name)
        record = self.fetch(Session, session_id)
        if record["status"] == "deleted" and not include_deleted:
            raise NotFoundError("the session was deleted", model="Session", ids=session_id)
        return record

    def list_for_user(self, user_id: str, *, session_type: str | None = None, status: str | None = None,
                      limit: int = 100, include_deleted: bool = False) -> list[Record]:
        """The user's sessions of this app, newest first, optionally of one type or status."""
        Session = self.model(self.model_name)
        self.require(Session, "user_id", user_id)
        query = select(Session).where(Session.user_id == user_id)
        if session_type is not None:
            isolation.check_scope(self.app, Session, session_type)
            query = query.where(Session.session_type == session_type)
        else:
            allowed = isolation.allowed_scope(self.app, Session)
            if allowed is not None:  # no type asked for: this app's own types, by definition
                query = query.where(Session.session_type.in_(allowed))
        if status is not None:
            self._check_status(status)
            query = query.where(Session.status == status)
        elif not include_deleted:
            query = query.where(Session.status != "deleted")
        query = query.order_by(Session.created_at.desc(), Session.id).limit(limit)
        with self.unit(Session, user_id) as db:
            return [to_jsonable(s) for s in db.scalars(query)]

    def update(self, session_id: str, *, status: str | None = None, data: dict[str, Any] | None = None) -> Record:
        Session = self.model(self.model_name)
        changes: dict[str, Any] = {}
        if status is not None:
            self._check_status(status, session_id)
            changes["status"] = status
        if data is not None:
            changes["data"] = data
        return self.modify(Session, session_id, changes)

    def complete(self, session_id: str, result: dict[str, Any] | None = None) -> Record:
        """Mark the session completed; `result` is kept under data["result"]."""
        current = self.get(session_id)
        data = dict(current.get("data") or {})
        if result is not None:
            data["result"] = result
        Session = self.model(self.model_name)
        return self.modify(Session, session_id, {"status": "completed", "completed_at": utcnow(), "data": data})

    def delete(self, session_id: str, user_id: str, *, hard: bool = False) -> None:
        """Soft delete (status 'deleted', deleted_at set) or, with hard=True, remove the row."""
        Session = self.model(self.model_name)
        self.require(Session, "user_id", user_id)
        record = self.fetch(Session, session_id)
        self.owned_by(Session, record, user_id, session_id)
        if hard:
            self.remove(Session, session_id)
        else:
            self.modify(Session, session_id, {"status": "deleted", "deleted_at": utcnow()})
        self.log.info("%s deleted session %s", "hard" if hard else "soft", session_id)

    @staticmethod
    def _check_status(status: str, ids: Any = None) -> None:
        from timber_tasks.errors import ValidationError

        if status not in STATUSES:
            raise ValidationError("Session", "status", f"{status!r} is not one of {', '.join(STATUSES)}", ids=ids)
