"""Facts about brokers and apps that tasks need without importing the Celery app module."""

from __future__ import annotations

from celery import Celery

from timber_tasks.settings import Settings

# Brokers that hold an unacked copy of a job and give it back when a worker dies.
REDELIVERING_SCHEMES = ("redis", "rediss", "sentinel", "amqp", "amqps", "pyamqp")


def settings_of(app: Celery) -> Settings:
    """The Settings an app was built from (apps not built by make_celery get the environment's)."""
    return getattr(app, "timber_settings", None) or Settings.load()


def broker_keeps_unacked(broker_url: str) -> bool:
    return broker_url.split("://", 1)[0].split("+")[0] in REDELIVERING_SCHEMES


def is_redis(broker_url: str) -> bool:
    return broker_url.split("://", 1)[0] in ("redis", "rediss", "sentinel")
