"""Queue names and routes: constants the Celery app, the worker pools and the CLI share."""

from __future__ import annotations

# One queue per job family; pools (workers/*.yaml) consume some of them.
QUEUES = ("persistence", "embeddings", "market_data", "gdpr", "maintenance")

# Task names carry their family; an app never names a queue.
ROUTES = {
    "timber.persistence.*": {"queue": "persistence"},
    "timber.embeddings.*": {"queue": "embeddings"},
    "timber.market_data.*": {"queue": "market_data"},
    "timber.gdpr.*": {"queue": "gdpr"},
    "timber.maintenance.*": {"queue": "maintenance"},
    "timber.cache.*": {"queue": "maintenance"},
}
