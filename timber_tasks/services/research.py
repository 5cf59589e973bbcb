"""Stock research sessions and the data gathered for them (seed 001's research service)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from timber_tasks.errors import ValidationError
from timber_tasks.models.records import to_jsonable
from timber_tasks.services.base import BaseService, Record


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
