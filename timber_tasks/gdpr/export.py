"""A subject's data as one ZIP: per model a JSON Lines file and a CSV, and manifest.json.

Rows stream from the database straight into the archive (one pass; the CSV goes through a
spooled temporary file), so memory stays flat however many rows the subject has. The file
appears under its name only when complete (written beside it, then renamed).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from timber_tasks.gdpr import audit
from timber_tasks.gdpr.archive import ArchiveKey, EncryptingWriter, partial_file
from timber_tasks.gdpr.stores import open_stores
from timber_tasks.gdpr.stores.base import Progress
from timber_tasks.gdpr.subject import OutputExistsError, Subject
from timber_tasks.models.defaults import utcnow

SPOOL_BYTES = 1 << 20  # CSV bytes kept in memory before the spool moves to disk
COPY_BYTES = 1 << 16
WRITE_ROWS = 500  # JSON lines joined per write into the archive

# Job payloads, results and cache entries hold copies of database rows: they are erased, not exported.
NOT_FOUND_NOTE = ("no personal data of this subject in the GDPR models or the vector store (job payloads, results "
                  "and cache entries hold copies and are not exported: `timber-tasks gdpr verify` lists them)")


class _HashingWriter:
    """Counts the SHA-256 of what is written through it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.sha = hashlib.sha256()

    def write(self, data: bytes) -> None:
        self.sha.update(data)
        self.raw.write(data)


@dataclass
class ZipSink:
    """The archive being written: what the stores' export methods write parts into."""

    zf: zipfile.ZipFile
    hashes: dict[str, str] = field(default_factory=dict)
    parts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add_part(self, name: str, rows: Iterable[dict[str, Any]], *, csv_fields: list[str],
                 info: dict[str, Any], total: int) -> int:
        count = 0
        with tempfile.SpooledTemporaryFile(SPOOL_BYTES, mode="w+b") as spool:
            csv_text = io.TextIOWrapper(spool, encoding="utf-8", newline="")
            table = csv.writer(csv_text)
            table.writerow(csv_fields)
            jsonl = f"data/{name}.jsonl"
            encode = json.JSONEncoder(ensure_ascii=False, default=str).encode
            with self.zf.open(jsonl, "w", force_zip64=True) as member:
                out = _HashingWriter(member)
                lines: list[str] = []
                for row in rows:
                    lines.append(encode(row))
                    table.writerow([_cell(row.get(f)) for f in csv_fields])
                    count += 1
                    if len(lines) == WRITE_ROWS:
                        out.write(("\n".join(lines) + "\n").encode("utf-8"))
                        lines.clear()
                if lines:
                    out.write(("\n".join(lines) + "\n").encode("utf-8"))
            self.hashes[jsonl] = out.sha.hexdigest()
            csv_text.flush()
            spool.seek(0)
            csv_name = f"data/{name}.csv"
            with self.zf.open(csv_name, "w", force_zip64=True) as member:
                out = _HashingWriter(member)
                while chunk := spool.read(COPY_BYTES):
                    out.write(chunk)
            self.hashes[csv_name] = out.sha.hexdigest()
            csv_text.detach()
        self.parts[name] = {"rows": count, "files": [jsonl, csv_name], "csv_fields": csv_fields, **info}
        return count


def _cell(value: Any) -> Any:
    return json.dumps(value, ensure_ascii=False) if type(value) in (dict, list) else value


@dataclass(frozen=True)
class ExportReport:
    path: Path
    counts: dict[str, int]
    manifest: dict[str, Any]
    sha256: str  # of the file written (the encrypted one, when encrypted)


def export_subject(timber: Any, user_id: str, out: Path | str, *, force: bool = False,
                   archive_key: ArchiveKey | None = None, actor: str = "unknown",
                   progress: Progress | None = None) -> ExportReport:
    """Write the subject's data from every store to `out` (a ZIP, or an encrypted ZIP with a key)."""
    target = Path(out)
    if target.exists() and not force:
        raise OutputExistsError(str(target))
    subject = Subject.of(timber, user_id)
    fd, partial = partial_file(target)
    try:
        with os.fdopen(fd, "wb") as raw:
            writer: Any = EncryptingWriter(raw, archive_key) if archive_key is not None else raw
            with zipfile.ZipFile(writer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
                sink = ZipSink(zf)
                counts: dict[str, int] = {}
                for store in open_stores(timber):
                    counts.update(store.export(subject, sink, progress))
                manifest = _manifest(timber, subject, sink, counts, encrypted=archive_key is not None)
                zf.writestr("manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False))
            if archive_key is not None:
                writer.close()
        digest = _file_sha256(partial)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    audit.record(timber, "export", subject.hash, actor, {"rows": counts},
                 detail=f"archive sha256 {digest}" + (" (encrypted)" if archive_key else ""))
    return ExportReport(target, counts, manifest, digest)


def _manifest(timber: Any, subject: Subject, sink: ZipSink, counts: dict[str, int], *,
              encrypted: bool) -> dict[str, Any]:
    found = any(counts.values())
    return {
        "subject": subject.user_id,
        "subject_found": found,
        "note": None if found else NOT_FOUND_NOTE,
        "exported_at": utcnow().isoformat() + "Z",
        "app": timber.app_name,
        "generator": "timber-tasks gdpr export",
        "encrypted_for_delivery": encrypted,
        "row_counts": counts,
        "models": sink.parts,
        "files": dict(sink.hashes),  # SHA-256 of each file's content as stored in the archive
    }


def _file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(COPY_BYTES):
            sha.update(chunk)
    return sha.hexdigest()


def read_manifest(path: Path) -> dict[str, Any]:
    with zipfile.ZipFile(path) as zf:
        manifest: dict[str, Any] = json.loads(zf.read("manifest.json"))
        return manifest


__all__ = ["ExportReport", "ZipSink", "export_subject", "read_manifest"]
