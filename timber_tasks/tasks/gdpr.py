"""GDPR jobs on the `gdpr` queue: export, erasure, ledger replay. Thin: the work is in timber_tasks/gdpr/.

An erasure job carries only the id of its ledger request (gdpr.request_erasure), never the
subject's id: the job's message, outbox row and Celery result hold nothing to erase later.
Progress goes to the result backend as state PROGRESS and to Flower as `task-progress` events.
"""

from __future__ import annotations

from typing import Any

from celery.result import AsyncResult

from timber_tasks import gdpr
from timber_tasks.tasks.base import ProgressReport, TimberTask, get_timber, timber_task


@timber_task("timber.gdpr.export", base=TimberTask, bind=True)
def export(self: TimberTask, user_id: str, out: str, force: bool = False, requested_by: str = "app",
           archive_key: str | None = None, passphrase: str | None = None) -> dict[str, Any]:
    """Write the subject's export to `out` (a path the worker can write); returns counts and the file's hash."""
    key = gdpr.ArchiveKey(key=archive_key, passphrase=passphrase) if (archive_key or passphrase) else None

    report_progress = ProgressReport(self)

    def progress(part: str, done: int, total: int) -> None:
        report_progress({"part": part, "done": done, "total": total},
                        f"exporting {part}: {done:,} of {total:,} rows", final=done == total)

    report = gdpr.export_subject(get_timber(), user_id, out, force=force, archive_key=key, actor=requested_by,
                                 progress=progress)
    return {"path": str(report.path), "counts": report.counts, "sha256": report.sha256}


@timber_task("timber.gdpr.erase", base=TimberTask, bind=True)
def erase(self: TimberTask, request_id: str) -> dict[str, Any]:
    """Carry out a requested erasure; a redelivered or repeated job finishes it or changes nothing."""
    done: dict[str, int] = {}
    report_progress = ProgressReport(self)

    def step(store: str, changed: int) -> None:
        done[store] = changed
        report_progress({"stores_done": dict(done)}, f"erased from {len(done)} store(s), last {store}: {changed:,}",
                        final=True)

    report = gdpr.run_erasure(get_timber(), request_id, on_step=step)
    return {"request": report.request_id, "counts": report.counts}


@timber_task("timber.gdpr.replay_ledger", base=TimberTask)
def replay_ledger(requested_by: str = "maintenance") -> dict[str, Any]:
    """After a database restore: erase again every subject the ledger says was erased."""
    reports = gdpr.replay_ledger(get_timber(), requested_by=requested_by)
    return {"erased_again": len(reports), "requests": [r.request_id for r in reports]}


def erase_user(user_id: str, *, requested_by: str) -> AsyncResult:
    """For apps: record the erasure request, then enqueue the job that carries it out."""
    request_id = gdpr.request_erasure(get_timber(), user_id, requested_by=requested_by)
    return erase.delay(request_id)
