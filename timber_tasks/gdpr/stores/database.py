"""The YAML models: every GDPR-enabled model of every app, and the rows its `include` reaches.

Erasure runs in one database transaction through a session, so the after-write step sees
it (cache invalidation, the change record). Children go before parents, so foreign keys
without ON DELETE never block the delete of a parent row.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import String, cast, delete, func, literal, or_, select, update
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Session

from timber_tasks.gdpr.stores.base import ExportSink, PersonalDataStore, Progress
from timber_tasks.gdpr.subject import ERASED_MARK, GdprError, Subject
from timber_tasks.models.records import jsonable_value

STREAM_ROWS = 1000  # rows fetched per round trip while exporting (server-side cursor on PostgreSQL)


@dataclass(frozen=True)
class Part:
    """Rows of one model that belong to a subject: directly (user_id_field) or through a relationship."""

    model: type[Any]
    gdpr: Any  # the GdprSpec of the model whose YAML claims these rows
    via: str | None = None  # "Parent.relationship" for included rows
    parent: Part | None = None
    local: Any = None  # parent column the relationship joins on
    remote: Any = None  # this model's column pointing at it

    @property
    def name(self) -> str:
        return self.model.timber_spec.name

    def condition(self, subject: Subject) -> Any:
        if self.parent is None:
            return getattr(self.model, self.gdpr.user_id_field) == subject.user_id
        keys = select(self.local).where(self.parent.condition(subject))
        return self.remote.in_(keys)

    def columns(self) -> list[Any]:
        return [getattr(self.model, a.key) for a in sa_inspect(self.model).column_attrs]


def plan(registry: Any) -> list[Part]:
    """Every part of the database a subject may have rows in, children before parents."""
    order = {table.name: n for n, table in enumerate(registry.metadata.sorted_tables)}
    seen_tables: set[tuple[str, str]] = set()
    parts: list[Part] = []
    for model in registry.with_feature("gdpr"):
        gdpr = model.timber_spec.spec.gdpr
        key = (model.__table__.name, gdpr.user_id_field)
        if key in seen_tables:  # a single-table child: its parent's rows cover it
            continue
        seen_tables.add(key)
        direct = Part(model, gdpr)
        parts.append(direct)
        for rel_name in gdpr.include:
            rel = sa_inspect(model).relationships[rel_name]
            (local, remote), = rel.local_remote_pairs
            parts.append(Part(rel.mapper.class_, gdpr, f"{direct.name}.{rel_name}", direct, local, remote))
    # Deepest table first; an included part just before the part it hangs on.
    return sorted(parts, key=lambda p: (-order[p.model.__table__.name], p.parent is None))


def unclaimed_models(registry: Any) -> list[str]:
    """Models that point at a subject's rows (foreign key or cascade) but no GDPR block or include covers."""
    claimed = {p.model.__table__.name for p in plan(registry)}
    reached = set(claimed)  # tables holding a subject's rows: claimed ones, then whatever points at them
    missing: list[str] = []
    changed = True
    while changed:
        changed = False
        for model in registry:
            table = model.__table__
            if table.name in reached:
                continue
            if any(fk.column.table.name in reached for fk in table.foreign_keys):
                missing.append(model.timber_spec.name)
                reached.add(table.name)
                changed = True
    return missing


class DatabaseStore(PersonalDataStore):
    name = "database"

    def __init__(self, timber: Any) -> None:
        super().__init__(timber)
        self.parts = plan(timber.registry)

    def export(self, subject: Subject, sink: ExportSink, progress: Progress | None = None) -> dict[str, int]:
        counts: dict[str, int] = {}
        with self.timber.db.session_scope() as session:
            totals = {p.via or p.name: self._count(session, p, subject) for p in self.parts}
            for part in reversed(self.parts):  # parents first reads naturally
                label = part.via or part.name
                columns = part.columns()
                names = [c.key for c in columns]
                fields = list(part.gdpr.export_fields) if part.parent is None and part.gdpr.export_fields else names
                rows = self._rows(session, select(*columns).where(part.condition(subject)), names,
                                  label, totals[label], progress)
                counts[label] = sink.add_part(label, rows, csv_fields=fields, info=_article_15(part),
                                              total=totals[label])
        return counts

    @staticmethod
    def _rows(session: Session, query: Any, names: list[str], label: str, total: int,
              progress: Progress | None) -> Iterator[dict[str, Any]]:
        # Only columns whose values are not JSON already (dates, decimals, bytes) pay for a conversion.
        convert = [i for i, c in enumerate(query.selected_columns) if _python_type(c) not in JSON_NATIVE]
        for done, row in enumerate(session.execute(query.execution_options(yield_per=STREAM_ROWS)), 1):
            if progress is not None and (done % STREAM_ROWS == 0 or done == total):
                progress(label, done, total)
            values = list(row)
            for i in convert:
                values[i] = jsonable_value(values[i])
            yield dict(zip(names, values, strict=True))

    @staticmethod
    def _count(session: Session, part: Part, subject: Subject) -> int:
        return int(session.scalar(select(func.count()).select_from(part.model).where(part.condition(subject))) or 0)

    def erase(self, subject: Subject) -> int:
        changed = 0
        with self.timber.db.session_scope() as session:  # one transaction for the whole database part
            for part in self.parts:
                anonymize = part.parent is None and part.gdpr.erasure == "anonymize"
                if anonymize:
                    stmt: Any = update(part.model).where(part.condition(subject)).values(
                        **self._blanks(part, subject))
                else:
                    stmt = delete(part.model).where(part.condition(subject))
                result = session.execute(stmt.execution_options(synchronize_session=False))
                changed += int(getattr(result, "rowcount", 0) or 0)
        return changed

    @staticmethod
    def _blanks(part: Part, subject: Subject) -> dict[str, Any]:
        """Anonymized values: NULL where allowed, else the erased mark (with the row key where unique)."""
        blanks: dict[str, Any] = {}
        mapper = sa_inspect(part.model)
        for field in part.gdpr.anonymize_fields:
            column = mapper.columns[field]
            if column.nullable:
                blanks[field] = None
            elif isinstance(getattr(column.type, "impl_instance", column.type), String):
                mark: Any = literal(subject.anonymized_text())
                if column.unique:
                    mark = mark.concat("-").concat(cast(mapper.primary_key[0], String))
                blanks[field] = mark
            else:
                raise GdprError(f"{part.name}: gdpr.anonymize_fields names {field!r}, which is neither nullable "
                                "nor text; make it nullable or erase the model's rows (erasure: delete)")
        return blanks

    def residue(self, subject: Subject) -> dict[str, int]:
        found: dict[str, int] = {}
        with self.timber.db.session_scope() as session:
            for part in self.parts:
                condition = part.condition(subject)
                if part.parent is None and part.gdpr.erasure == "anonymize":
                    columns = [getattr(part.model, f) for f in part.gdpr.anonymize_fields]
                    condition = condition & or_(*[_not_blank(c) for c in columns])
                n = int(session.scalar(select(func.count()).select_from(part.model).where(condition)) or 0)
                if n:
                    found[f"{self.name}:{part.via or part.name}"] = n
        return found


JSON_NATIVE = (str, int, float, bool, dict, list)


def _python_type(column: Any) -> Any:
    try:
        return column.type.python_type
    except NotImplementedError:  # our encrypted type, JSON variants: decoded to JSON values already
        return dict
    except AttributeError:
        return object


def _not_blank(column: Any) -> Any:
    if isinstance(column.type, String) and not hasattr(column.type, "impl_instance"):
        return column.isnot(None) & ~column.like(ERASED_MARK + "%")
    return column.isnot(None)


def _article_15(part: Part) -> dict[str, Any]:
    gdpr = part.gdpr
    info = {"purpose": gdpr.purpose, "legal_basis": gdpr.legal_basis, "retention": gdpr.retention,
            "recipients": list(gdpr.recipients), "source": gdpr.source}
    if part.via:
        info["reached_through"] = part.via
    return info
