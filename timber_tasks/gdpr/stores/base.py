"""What every store that can hold personal data says: how it exports, erases and finds a subject."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Protocol

from timber_tasks.gdpr.subject import Subject

Progress = Callable[[str, int, int], None]  # (part, rows done, rows in all) while exporting


class ExportSink(Protocol):
    """Where a store writes a subject's data during an export (an archive member per part)."""

    def add_part(self, name: str, rows: Iterable[dict[str, Any]], *, csv_fields: list[str],
                 info: dict[str, Any], total: int) -> int:
        """Write rows as <name>.jsonl and <name>.csv; returns how many rows were written."""


class PersonalDataStore(ABC):
    """One store of the platform that can hold a subject's data.

    `claims_tables`: the platform tables this store covers (a test checks every platform
    table is claimed or declared free of personal data).
    """

    name: ClassVar[str]
    claims_tables: ClassVar[tuple[str, ...]] = ()

    def __init__(self, timber: Any) -> None:
        self.timber = timber

    def export(self, subject: Subject, sink: ExportSink, progress: Progress | None = None) -> dict[str, int]:
        """Write the subject's data to the sink; {part: rows}. Stores holding copies of database rows
        (job payloads, cache entries) export nothing: the database part has the same data."""
        return {}

    @abstractmethod
    def erase(self, subject: Subject) -> int:
        """Remove the subject's data; returns how many items changed. Running it again changes nothing."""

    @abstractmethod
    def residue(self, subject: Subject) -> dict[str, int]:
        """What still holds the subject's data: {where: count}; empty when nothing does."""
