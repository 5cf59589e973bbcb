"""Lost jobs found by looking, not by age: an unfinished job whose id the broker and the workers do not have.

A job the outbox still watches (published, effect not committed) is somewhere: in a queue,
in the broker's unacked set, or in a worker's hands (running, prefetched, or waiting for its
countdown). A Redis restart without persistence, or a kill at the wrong moment, leaves it in
none of them: it is lost and can be sent again at once, rather than after
TIMBER_OUTBOX_REPUBLISH_AFTER. The broker is read twice, a second apart, so a job that is
between a queue and a worker's unacked record (Redis BRPOP) is not taken for lost.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from celery import Celery

from timber_tasks.brokers import is_embedded, is_redis
from timber_tasks.queues import QUEUES

log = logging.getLogger("timber_tasks.outbox")

SECOND_LOOK_AFTER = 1.0  # seconds between the two looks at the broker


def _ids_in_messages(raw: Iterable[Any]) -> set[str]:
    ids: set[str] = set()
    for item in raw:
        try:
            message = json.loads(item)
            if isinstance(message, list):  # the unacked hash holds [message, exchange, routing key]
                message = message[0]
            ids.add(str(message["headers"]["id"]))
        except (ValueError, KeyError, TypeError, IndexError):
            continue
    return ids


def _redis_ids(app: Celery) -> tuple[set[str], set[str]]:
    with app.connection_for_read() as conn:
        channel = conn.default_channel
        client = channel.client
        keys = [channel._q_for_pri(queue, pri) for queue in QUEUES for pri in channel.priority_steps]
        queued: set[str] = set()
        for key in keys:
            queued |= _ids_in_messages(client.lrange(key, 0, -1))
        return queued, _ids_in_messages(client.hvals(channel.unacked_key))


def _files_ids(folder: Path) -> set[str]:
    ids: set[str] = set()
    for root, _, names in os.walk(folder):
        for name in names:
            try:
                ids |= _ids_in_messages([Path(root, name).read_bytes()])
            except OSError:  # claimed or acked meanwhile
                continue
    return ids


def _embedded_ids(app: Celery) -> tuple[set[str], set[str]]:
    with app.connection_for_read() as conn:
        channel = conn.default_channel
        queues, processing = Path(channel.queues_folder), Path(channel.processing_folder)
    return _files_ids(queues), _files_ids(processing)  # processing: claimed by a worker, not acked


def _in_workers(app: Celery) -> set[str] | None:
    """Ids running, prefetched or scheduled in the workers; None when no worker answered."""
    inspect = app.control.inspect(timeout=1.0)
    ids: set[str] = set()
    answered = False
    for method in (inspect.active, inspect.reserved, inspect.scheduled):
        replies = method() or {}
        answered = answered or bool(replies)
        for jobs in replies.values():
            for job in jobs:
                request = job.get("request", job)
                if request.get("id"):
                    ids.add(str(request["id"]))
    return ids if answered else None


def broker_ids(app: Celery) -> tuple[set[str], set[str]] | None:
    """(queued, unacked) job ids the broker holds; None for brokers this cannot read."""
    url = str(app.conf.broker_url)
    if is_redis(url):
        return _redis_ids(app)
    if is_embedded(url):
        return _embedded_ids(app)
    return None


def lost(app: Celery, candidates: list[str]) -> list[str]:
    """The candidates (unfinished job ids) that neither the broker nor any worker has."""
    if not candidates:
        return []
    first = broker_ids(app)
    if first is None:
        return []
    missing = [c for c in candidates if c not in first[0]]
    if not missing:
        return []
    time.sleep(SECOND_LOOK_AFTER)
    queued, unacked = broker_ids(app) or (set(), set())
    unacked |= first[1]
    missing = [c for c in missing if c not in queued]
    if not missing:
        return []
    held = _in_workers(app)
    if held is None:
        # No worker answered: an unacked job may be in the hands of one that is starting; only
        # a job that is nowhere at all is lost.
        return [c for c in missing if c not in unacked]
    # Workers answered: an unacked job none of them holds belongs to a dead worker, so it is lost
    # too (the broker would give it back only after the visibility timeout).
    return [c for c in missing if c not in held]
