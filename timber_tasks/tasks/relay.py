"""Publishing outbox rows: right after the writer's commit, and later by the relay for what is due."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from celery import Celery
from sqlalchemy import select

from timber_tasks.brokers import broker_keeps_unacked
from timber_tasks.jobs import outbox
from timber_tasks.jobs.tables import OutboxMessage
from timber_tasks.models.defaults import utcnow
from timber_tasks.runtime import Timber
from timber_tasks.tasks import lost_jobs

log = logging.getLogger("timber_tasks.outbox")

# A committer publishes its own rows at once; the relay leaves fresh pending rows to it.
PENDING_GRACE = timedelta(seconds=5)
# A published job is looked for in the broker only after this: it is on its way there before.
LOST_AFTER = timedelta(seconds=5)
# Publish attempts when the broker may be down: fail fast, the relay comes back later.
PUBLISH_RETRY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}


def _publish(app: Celery, timber: Timber, rows: list[OutboxMessage]) -> list[str]:
    """Send the rows to the broker, in order, until one fails; record the ones sent."""
    sent: list[str] = []
    for row in rows:
        try:
            app.send_task(row.task_name, list(row.args), dict(row.kwargs), task_id=row.task_id,
                          retry=True, retry_policy=PUBLISH_RETRY, **dict(row.options))
        except Exception as exc:
            log.warning("broker unavailable (%s): %d job(s) stay in the outbox", exc, len(rows) - len(sent))
            break
        sent.append(row.task_id)
    outbox.mark_published(timber.db, sent, keep=not broker_keeps_unacked(str(app.conf.broker_url)))
    return sent


def publish_rows(app: Celery, timber: Timber, task_ids: list[str]) -> int:
    with timber.db.session_scope() as session:
        rows = list(session.scalars(select(OutboxMessage).where(OutboxMessage.task_id.in_(task_ids))))
    return len(_publish(app, timber, rows))


def relay(app: Celery, timber: Timber, *, limit: int = 500) -> dict[str, Any]:
    """Publish pending rows nobody published, re-send lost jobs, and re-publish tracked jobs that never finished."""
    rows = outbox.due(timber.db, pending_after=PENDING_GRACE,
                      published_after=timedelta(seconds=timber.settings.republish_after), limit=limit)
    found_lost = _lost_rows(app, timber, {row.task_id for row in rows}, limit)
    sent = _publish(app, timber, rows + found_lost)
    if sent:
        log.info("outbox relay published %d job(s), %d of them found lost", len(sent), len(found_lost))
    return {"due": len(rows) + len(found_lost), "published": len(sent), "lost": len(found_lost)}


def _lost_rows(app: Celery, timber: Timber, already: set[str], limit: int) -> list[OutboxMessage]:
    """Published, unfinished jobs that no queue, unacked set or worker holds (see lost_jobs.py)."""
    if broker_keeps_unacked(str(app.conf.broker_url)):
        return []
    with timber.db.session_scope() as session:
        candidates = [task_id for task_id in session.scalars(
            select(OutboxMessage.task_id).where(OutboxMessage.status == "published",
                                                OutboxMessage.updated_at <= utcnow() - LOST_AFTER)
            .order_by(OutboxMessage.updated_at).limit(limit)) if task_id not in already]
    try:
        missing = lost_jobs.lost(app, candidates)
    except Exception as exc:  # the broker may be what is down: the age rule still applies
        log.warning("looking for lost jobs failed (%s); they go out again after TIMBER_OUTBOX_REPUBLISH_AFTER", exc)
        return []
    if not missing:
        return []
    with timber.db.session_scope() as session:  # still unfinished now (one may have finished meanwhile)
        return list(session.scalars(select(OutboxMessage).where(OutboxMessage.task_id.in_(missing),
                                                                OutboxMessage.status == "published")))
