"""Facts about brokers and apps that tasks need without importing the Celery app module.

The embedded default's transport lives in `maildir.py`; importing this package registers
its `maildir://` URL with kombu.
"""

from __future__ import annotations

from celery import Celery
from kombu.transport import TRANSPORT_ALIASES

from timber_tasks.settings import EMBEDDED_BROKER_URL, Settings

__all__ = ["EMBEDDED_BROKER_URL", "broker_keeps_unacked", "is_embedded", "is_redis", "settings_of"]

TRANSPORT_ALIASES.setdefault("maildir", "timber_tasks.brokers.maildir:Transport")

# Brokers that hold an unacked copy of every job on the server and give it back when a worker dies.
# Not Redis: kombu takes a job with BRPOP (gone from the queue) and only then records it as
# unacked, from the worker; a worker killed in between loses it (seen in test_faults). So on
# Redis, as on the embedded broker, the outbox keeps every job until its effect commits.
REDELIVERING_SCHEMES = ("amqp", "amqps", "pyamqp")


def settings_of(app: Celery) -> Settings:
    """The Settings an app was built from (apps not built by make_celery get the environment's)."""
    return getattr(app, "timber_settings", None) or Settings.load()


def broker_keeps_unacked(broker_url: str) -> bool:
    return broker_url.split("://", 1)[0].split("+")[0] in REDELIVERING_SCHEMES


def is_redis(broker_url: str) -> bool:
    return broker_url.split("://", 1)[0] in ("redis", "rediss", "sentinel")


def is_embedded(broker_url: str) -> bool:
    """The folder broker of the embedded default (`maildir://`)."""
    return broker_url.split("://", 1)[0] == "maildir"
