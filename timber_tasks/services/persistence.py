"""Sessions of every app (told apart by session_type) and stock research (seeds 001 and 003)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from timber_tasks.errors import NotFoundError, ValidationError
from timber_tasks.features import isolation
from timber_tasks.models.defaults import utcnow
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
        if status not in STATUSES:
            raise ValidationError("Session", "status", f"{status!r} is not one of {', '.join(STATUSES)}", ids=ids)


class ResearchService(BaseService):
    """StockResearchSession (its proprietary analysis encrypted) and ResearchData."""

    def start(self, user_id: str, symbol: str, analysis_type: str, *, summary: str | None = None,
              proprietary_analysis: Any = None, results: Any = None) -> Record:
        """A new research session on a symbol."""
        Research = self.model("StockResearchSession")
        self.require(Research, "user_id", user_id)
        self.require(Research, "symbol", symbol)
        self.require(Research, "analysis_type", analysis_type)
        return self.insert(Research, {"user_id": user_id, "symbol": symbol, "analysis_type": analysis_type,
                                      "summary": summary, "proprietary_analysis": proprietary_analysis,
                                      "results": results})

    def get_session(self, research_session_id: str) -> Record:
        return self.fetch(self.model("StockResearchSession"), research_session_id)

    def update_session(self, research_session_id: str, **changes: Any) -> Record:
        return self.modify(self.model("StockResearchSession"), research_session_id, changes)

    def list_sessions(self, user_id: str, *, symbol: str | None = None, limit: int = 100) -> list[Record]:
        Research = self.model("StockResearchSession")
        self.require(Research, "user_id", user_id)
        query = select(Research).where(Research.user_id == user_id)
        if symbol is not None:
            query = query.where(Research.symbol == symbol)
        query = query.order_by(Research.created_at.desc(), Research.id).limit(limit)
        with self.unit(Research, user_id) as db:
            return [to_jsonable(r) for r in db.scalars(query)]

    def save_research(self, research_session_id: str, data_type: str, content: Any,
                      source: str | None = None) -> Record:
        """Store one piece of research data under an existing research session."""
        Data = self.model("ResearchData")
        self.require(Data, "session_id", research_session_id)
        self.require(Data, "data_type", data_type)
        self.get_session(research_session_id)  # missing session: NotFoundError before the write
        return self.insert(Data, {"session_id": research_session_id, "data_type": data_type,
                                  "content": content, "source": source})

    def list_research(self, research_session_id: str, *, data_type: str | None = None) -> list[Record]:
        Data = self.model("ResearchData")
        self.require(Data, "session_id", research_session_id)
        self.get_session(research_session_id)
        query = select(Data).where(Data.session_id == research_session_id)
        if data_type is not None:
            query = query.where(Data.data_type == data_type)
        query = query.order_by(Data.collected_at.desc(), Data.id)
        with self.unit(Data, research_session_id) as db:
            return [to_jsonable(r) for r in db.scalars(query)]

    def delete_session(self, research_session_id: str, user_id: str) -> None:
        Research = self.model("StockResearchSession")
        if not user_id:
            raise ValidationError("StockResearchSession", "user_id", "is required and may not be empty")
        record = self.fetch(Research, research_session_id)
        self.owned_by(Research, record, user_id, research_session_id)
        self.remove(Research, research_session_id)
