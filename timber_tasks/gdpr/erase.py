"""Erasure, its ledger and its replay after a restore; verify (residue in every store).

An erasure is a ledger row first (committed on its own), then the stores in order: the
database in one transaction, then every copy. Each store's erase is idempotent, so a run
interrupted anywhere (a killed worker) completes when it runs again. The ledger row keeps
only the subject's keyed hash once the erasure completes.
"""

from __future__ import annotations

import json
import os
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from timber_tasks.gdpr import audit
from timber_tasks.gdpr.stores import open_stores
from timber_tasks.gdpr.stores.database import plan
from timber_tasks.gdpr.subject import GdprError, Subject, SubjectHasher
from timber_tasks.gdpr.tables import ErasureRecord
from timber_tasks.models.defaults import utcnow

StepDone = Callable[[str, int], None]  # (store, items changed) after each store


@dataclass(frozen=True)
class ErasureReport:
    request_id: str
    subject_hash: str
    counts: dict[str, int]


@dataclass
class Residue:
    """What verify found: {store:place: count}; empty means nothing of the subject is left."""

    subject_hash: str
    found: dict[str, int] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not self.found


def request_erasure(timber: Any, user_id: str, *, requested_by: str) -> str:
    """Record the erasure in the ledger (its own transaction) and return its id: what a job carries."""
    subject = Subject.of(timber, user_id)
    request_id = str(uuid.uuid4())
    with timber.db.session_scope() as session:
        session.add(ErasureRecord(id=request_id, subject_hash=subject.hash, hash_key=SubjectHasher.of(timber).key_id,
                                  sealed_subject=subject.user_id,
                                  status="requested", requested_by=requested_by[:200], requested_at=utcnow()))
    return request_id


def run_erasure(timber: Any, request_id: str, *, on_step: StepDone | None = None,
                action: str = "erase") -> ErasureReport:
    """Carry out (or finish) a requested erasure; a completed one is not run again."""
    with timber.db.session_scope() as session:
        record = session.get(ErasureRecord, request_id)
        if record is None:
            raise GdprError(f"no erasure request {request_id}; `timber-tasks gdpr erase USER_ID` makes one")
        if record.status == "completed":
            return ErasureReport(request_id, record.subject_hash, dict(record.counts or {}))
        record.runs += 1
        user_id, requested_by = str(record.sealed_subject), record.requested_by
    subject = Subject.of(timber, user_id)
    counts: dict[str, int] = {}
    for store in open_stores(timber):
        counts[store.name] = store.erase(subject)
        if on_step is not None:
            on_step(store.name, counts[store.name])
    with timber.db.session_scope() as session:
        record = session.get(ErasureRecord, request_id)
        assert record is not None
        record.status, record.completed_at, record.counts = "completed", utcnow(), counts
        key_id = SubjectHasher.of(timber).key_id
        record.subject_hash, record.hash_key = subject.hash, key_id  # a rotation may have come between the
        # request and this run: the entry is kept under the key that writes now
        record.sealed_subject = None  # from here on the ledger holds only the keyed hash
        # Earlier requests for the same subject that never finished are satisfied by this run.
        session.execute(update(ErasureRecord).where(
            ErasureRecord.subject_hash == subject.hash, ErasureRecord.status != "completed",
            ErasureRecord.id != request_id).values(status="completed", completed_at=utcnow(), sealed_subject=None,
                                                   counts={"completed_by": request_id}))
    _append_to_ledger_file(timber, request_id, subject.hash, key_id)
    audit.record(timber, action, subject.hash, requested_by, counts)
    return ErasureReport(request_id, subject.hash, counts)


def erase_subject(timber: Any, user_id: str, *, requested_by: str,
                  on_step: StepDone | None = None) -> ErasureReport:
    """Erase a subject from every store, in this process."""
    return run_erasure(timber, request_erasure(timber, user_id, requested_by=requested_by), on_step=on_step)


def unfinished(timber: Any) -> list[str]:
    """Erasures requested but not completed (a run was interrupted): `run_erasure` each to finish it."""
    with timber.db.session_scope() as session:
        return list(session.scalars(select(ErasureRecord.id).where(ErasureRecord.status != "completed")))


def verify_subject(timber: Any, user_id: str) -> Residue:
    """Scan every store for the subject; an unfinished erasure of the subject counts as residue too."""
    subject = Subject.of(timber, user_id)
    residue = Residue(subject.hash)
    for store in open_stores(timber):
        residue.found.update(store.residue(subject))
    hashes = SubjectHasher.of(timber).hashes(subject.user_id)
    with timber.db.session_scope() as session:
        pending = session.scalar(select(ErasureRecord.id).where(ErasureRecord.subject_hash.in_(hashes),
                                                                ErasureRecord.status != "completed").limit(1))
    if pending is not None:
        residue.found["ledger:unfinished erasure"] = 1
    return residue


def replay_ledger(timber: Any, *, requested_by: str) -> list[ErasureReport]:
    """After a database restore: erase again every subject the ledger says was erased.

    The ledger holds only keyed hashes, so candidates come from the data: every distinct
    subject id in a GDPR model is hashed (under every configured key) and looked up. An entry
    whose key is no longer configured could never match: that stops the replay, named, before
    anything is erased, rather than leave its subject restored without a word.
    """
    hasher = SubjectHasher.of(timber)
    entries = _ledger_entries(timber).values()
    _refuse_unmatchable(timber, hasher, entries)
    reports = [run_erasure(timber, request_id, action="replay") for request_id in unfinished(timber)]
    erased = {h for h, _ in entries}
    with timber.db.session_scope() as session:
        if not erased:
            return reports
        found: set[str] = set()
        for part in plan(timber.registry):
            if part.parent is not None:
                continue
            column = getattr(part.model, part.gdpr.user_id_field)
            query = select(column).where(column.isnot(None)).distinct().execution_options(yield_per=1000)
            for value in session.scalars(query):
                if erased.intersection(hasher.hashes(value)):
                    found.add(str(value))
    for user_id in sorted(found):
        request_id = request_erasure(timber, user_id, requested_by=requested_by)
        reports.append(run_erasure(timber, request_id, action="replay"))
    return reports


def ledger_key_counts(timber: Any) -> dict[str | None, int]:
    """Completed erasures per key id of their hash (None: entries written before ids were kept).

    Each key with entries must stay configured, or `replay_ledger` cannot match those entries:
    set beside `SubjectHasher.labelled_ids()` it says which keys may go after a rotation.
    """
    return dict(Counter(key for _, key in _ledger_entries(timber).values()))


def _ledger_entries(timber: Any) -> dict[str, tuple[str, str | None]]:
    """Completed erasures, {request id: (subject hash, key id)}, from the table and the file outside it."""
    with timber.db.session_scope() as session:
        entries: dict[str, tuple[str, str | None]] = {
            r: (h, k) for r, h, k in session.execute(select(
                ErasureRecord.id, ErasureRecord.subject_hash, ErasureRecord.hash_key).where(
                ErasureRecord.status == "completed"))}
    for request_id, subject_hash, key in _ledger_file_entries(timber):
        entries.setdefault(request_id, (subject_hash, key))
    return entries


def _refuse_unmatchable(timber: Any, hasher: SubjectHasher, entries: Iterable[tuple[str, str | None]]) -> None:
    lost = Counter(key for _, key in entries if key is not None and key not in hasher.key_ids)
    if lost:
        named = ", ".join(f"{n} under key {k}" for k, n in sorted(lost.items()))
        have = ", ".join(f"{label} {key_id}" for label, key_id in hasher.labelled_ids())
        raise GdprError(f"the erasure ledger ({ledger_file(timber)} and timber_gdpr_erasures) has entries "
                        f"hashed under keys this process lacks ({named}; configured: {have}): the replay "
                        "could not find those subjects. Configure the key they were written under "
                        "(TIMBER_GDPR_SUBJECT_KEY, or the old Fernet key as the last of TIMBER_ENCRYPTION_KEYS; "
                        "`timber-tasks gdpr keys` shows the id of each) and replay again")


# -- the ledger file: outside the database, so a restore of the database cannot roll it back ------


def ledger_file(timber: Any) -> Path:
    """TIMBER_GDPR_LEDGER, else gdpr-erasures.jsonl in the data dir: keep it on storage backed up apart
    from the database (a restored database brings back its old ledger table with it)."""
    configured = getattr(timber.settings, "gdpr_ledger_file", None)
    return Path(configured) if configured else Path(timber.settings.data_dir) / "gdpr-erasures.jsonl"


def _append_to_ledger_file(timber: Any, request_id: str, subject_hash: str, key_id: str) -> None:
    path = ledger_file(timber)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"request": request_id, "subject_hash": subject_hash, "key": key_id,
                       "completed_at": utcnow().isoformat() + "Z"}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())  # one write of one line: appends from several processes do not interleave
        os.fsync(fd)
    finally:
        os.close(fd)


def _ledger_file_entries(timber: Any) -> list[tuple[str, str, str | None]]:
    """(request id, subject hash, key id) per line; lines written before key ids were kept have none."""
    path = ledger_file(timber)
    if not path.exists():
        return []
    entries: list[tuple[str, str, str | None]] = []
    for n, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            request, subject_hash, key = item["request"], item["subject_hash"], item.get("key")
            if not (isinstance(request, str) and isinstance(subject_hash, str) and isinstance(key, str | None)) \
                    or len(subject_hash) > 64 or (key is not None and len(key) > 64):
                raise ValueError("request, subject_hash and key must be text, a hash and key id at most 64 long")
        except (ValueError, KeyError, TypeError) as exc:  # UnicodeDecodeError is a ValueError
            raise GdprError(f"{path} line {n} is not a ledger entry ({str(exc)[:200]}); repair or remove that "
                            "line") from None
        entries.append((request, subject_hash, key))
    return entries
