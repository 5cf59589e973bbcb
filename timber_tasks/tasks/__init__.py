"""Celery tasks: thin adapters over the library (jobs/, services/), one module per queue family."""

from timber_tasks.tasks.base import TimberTask, enqueue, get_timber

__all__ = ["TimberTask", "enqueue", "get_timber"]
