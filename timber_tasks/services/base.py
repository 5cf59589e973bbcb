"""What every domain service shares: app checks, cached reads by id, validation and error wrapping.

Services take and return plain data (JSON-safe dicts), never ORM objects: the same shape
comes from the cache and from the database, and a Celery task can pass it on as is.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from timber_tasks.errors import AccessDeniedError, DatabaseError, NotFoundError, ValidationError
from timber_tasks.features import isolation
from timber_tasks.features.cache import load_record
from timber_tasks.models.records import to_jsonable, validate_record

Record = dict[str, Any]


class BaseService:
    """A service acting for the Timber's app."""

    def __init__(self, timber: Any) -> None:
        self.timber = timber
        self.app = timber.app_name
        self.log = logging.getLogger(f"timber_tasks.services.{type(self).__name__}")

    def model(self, name: str) -> type[Any]:
        """The mapped class, refused when it belongs to another app."""
        model = self.timber.registry.get(name)
        isolation.check_model(self.app, model)
        return model

    @staticmethod
    def require(model: type[Any], field: str, value: Any) -> None:
        """Reject an empty identifier before anything is written or read."""
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ValidationError(model.timber_spec.name, field, "is required and may not be empty")

    @staticmethod
    def validated(model: type[Any], data: Mapping[str, Any], *, partial: bool = False,
                  ids: Any = None) -> dict[str, Any]:
        try:
            return validate_record(model, {k: v for k, v in data.items() if v is not None or partial},
                                   partial=partial)
        except ValidationError as exc:
            raise ValidationError(exc.model, exc.field, exc.message, ids=ids) from None

    @contextmanager
    def unit(self, model: type[Any], ids: Any = None) -> Iterator[Session]:
        """One transaction; database failures come out as DatabaseError naming the model and ids."""
        name = model.timber_spec.name
        try:
            with self.timber.db.session_scope() as session:
                yield session
        except ValidationError as exc:  # a refused write, named by the database manager: model and column
            if exc.ids is None and ids is not None:
                exc.ids = ids
            raise
        except IntegrityError as exc:
            reason = str(exc.orig).splitlines()[0] if exc.orig is not None else str(exc)
            raise DatabaseError(f"the database refused the write: {reason}", model=name, ids=ids) from exc
        except SQLAlchemyError as exc:
            raise DatabaseError(f"database operation failed: {str(exc).splitlines()[0]}", model=name,
                                ids=ids) from exc

    def fetch(self, model: type[Any], pk: Any) -> Record:
        """A row by primary key through the cache (L1, L2, database); checked against the app."""
        name = model.timber_spec.name
        self.require(model, "id", pk)
        try:
            record = self.timber.cache.get(model, pk, lambda: load_record(self.timber, model, pk))
        except SQLAlchemyError as exc:
            raise DatabaseError(f"reading failed: {str(exc).splitlines()[0]}", model=name, ids=pk) from exc
        scope = model.timber_spec.spec.app_scope
        if record is None:
            hidden = isolation.hidden_scope_value(self.timber, model, pk) if scope is not None else None
            if hidden is not None:  # row-level security hid it: say whose it is, not "missing"
                isolation.check_scope(self.app, model, hidden, ids=pk)
            raise NotFoundError("no such row", model=name, ids=pk)
        if scope is not None:
            isolation.check_scope(self.app, model, record[scope.column], ids=pk)
        return record

    def insert(self, model: type[Any], data: Mapping[str, Any]) -> Record:
        values = self.validated(model, data)
        with self.unit(model, values.get("id")) as session:
            obj = model(**values)
            session.add(obj)
            session.flush()
            return to_jsonable(obj)

    def modify(self, model: type[Any], pk: Any, changes: Mapping[str, Any]) -> Record:
        """Update columns of a row the app may see; the cache is invalidated by the session's commit."""
        self.fetch(model, pk)  # not found / another app's: refused before any write
        values = self.validated(model, changes, partial=True, ids=pk)
        with self.unit(model, pk) as session:
            obj = session.get(model, pk)
            if obj is None:
                raise NotFoundError("no such row", model=model.timber_spec.name, ids=pk)
            for key, value in values.items():
                setattr(obj, key, value)
            session.flush()
            return to_jsonable(obj)

    def remove(self, model: type[Any], pk: Any) -> None:
        self.fetch(model, pk)
        with self.unit(model, pk) as session:
            obj = session.get(model, pk)
            if obj is None:
                raise NotFoundError("no such row", model=model.timber_spec.name, ids=pk)
            session.delete(obj)

    def owned_by(self, model: type[Any], record: Record, user_id: str, pk: Any) -> None:
        if record.get("user_id") != user_id:
            raise AccessDeniedError(f"belongs to another user, not {user_id!r}", model=model.timber_spec.name,
                                    ids=pk)
