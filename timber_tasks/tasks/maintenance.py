"""Maintenance jobs: the outbox relay, idempotency record clean-up, and a no-op for health and benchmarks."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

from sqlalchemy import delete

from timber_tasks.features import cache, encryption
from timber_tasks.jobs import sealing
from timber_tasks.jobs.tables import JobRecord, system_metadata
from timber_tasks.models.defaults import utcnow
from timber_tasks.tasks import relay
from timber_tasks.tasks.base import TimberTask, get_timber, timber_task


@timber_task("timber.maintenance.relay_outbox", base=TimberTask, bind=True)
def relay_outbox(self: TimberTask, limit: int = 500) -> dict[str, Any]:
    return relay.relay(self.app, get_timber(), limit=limit)


@timber_task("timber.maintenance.purge_job_records", base=TimberTask)
def purge_job_records(older_than_days: int = 30) -> int:
    """Idempotency keys are kept long enough to outlive any redelivery, then dropped."""
    cutoff = utcnow() - timedelta(days=older_than_days)
    with get_timber().db.session_scope() as session:
        return int(session.execute(delete(JobRecord).where(JobRecord.created_at < cutoff)).rowcount)  # type: ignore[attr-defined]


@timber_task("timber.maintenance.rotate_encryption_keys", base=TimberTask)
def rotate_encryption_keys(batch_size: int = 500) -> dict[str, Any]:
    """Re-encrypt every encrypted field and re-seal stored job payloads under the newest key; re-runnable."""
    timber = get_timber()
    report = dataclasses.asdict(encryption.rotate_encryption_keys(timber, batch_size=batch_size))
    return {**report, "payloads_resealed": sealing.reseal_stored(timber.db, system_metadata)}


@timber_task("timber.cache.warm", base=TimberTask)
def warm_cache(model: str | None = None, keys: list[Any] | None = None) -> dict[str, int]:
    """Load the named keys (default: every cached model's YAML `warm_keys`) into both cache levels."""
    timber = get_timber()
    names = [model] if model else [m.timber_spec.name for m in timber.registry.with_feature("caching")]
    return {name: cache.warm_cache(timber, name, keys if model else None) for name in names}


@timber_task("timber.maintenance.noop")
def noop() -> None:
    """Does nothing: the floor every benchmark is measured against."""
