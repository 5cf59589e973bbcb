"""GDPR export (Art. 15, 20) and erasure (Art. 17) across every store, without Celery.

    export_subject(timber, user_id, "out.zip")      # one ZIP: JSON Lines + CSV per model, manifest.json
    erase_subject(timber, user_id, requested_by=..)  # every store; ledger + audit entry
    verify_subject(timber, user_id).found            # {} when nothing of the subject is left
    replay_ledger(timber, requested_by=..)           # after a database restore
"""

from timber_tasks.gdpr.archive import ArchiveKey, decrypt_archive, new_key
from timber_tasks.gdpr.erase import (
    ErasureReport,
    Residue,
    erase_subject,
    ledger_key_counts,
    replay_ledger,
    request_erasure,
    run_erasure,
    unfinished,
    verify_subject,
)
from timber_tasks.gdpr.export import ExportReport, export_subject, read_manifest
from timber_tasks.gdpr.stores import STORE_TYPES, PersonalDataStore, open_stores
from timber_tasks.gdpr.subject import GdprError, OutputExistsError, Subject, SubjectHasher

__all__ = [
    "STORE_TYPES", "ArchiveKey", "ErasureReport", "ExportReport", "GdprError", "OutputExistsError",
    "PersonalDataStore", "Residue", "Subject", "SubjectHasher", "decrypt_archive", "erase_subject",
    "export_subject", "ledger_key_counts", "new_key", "open_stores", "read_manifest", "replay_ledger",
    "request_erasure", "run_erasure", "unfinished", "verify_subject",
]
