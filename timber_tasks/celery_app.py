"""The Celery app: JSON only, late acks, routing by task name, events on, safe settings checked.

`celery -A timber_tasks worker|beat|inspect|flower` and `timber-tasks worker|beat|flower`
all use the `app` built here from Settings (environment, then embedded defaults).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, signals
from kombu import Queue

from timber_tasks import runtime, startup
from timber_tasks.brokers import broker_keeps_unacked, is_embedded, is_redis, settings_of
from timber_tasks.errors import ConfigError
from timber_tasks.jobs.sealing import SERIALIZER, hide_argsrepr, register_serializer
from timber_tasks.queues import QUEUES, ROUTES
from timber_tasks.settings import Settings
from timber_tasks.tasks import poison, result_errors

__all__ = ["QUEUES", "app", "broker_keeps_unacked", "check_app_config", "make_celery", "settings_of"]

TASK_MODULES = ["timber_tasks.tasks.persistence", "timber_tasks.tasks.maintenance", "timber_tasks.tasks.market_data",
                "timber_tasks.tasks.gdpr", "timber_tasks.tasks.embeddings"]


def embedded_transport_options(settings: Settings) -> dict[str, Any]:
    """The embedded broker's folder under the data dir (see timber_tasks/brokers/maildir.py)."""
    return {"data_folder": str((settings.data_dir / "broker").resolve()),
            "polling_interval": settings.broker_polling_interval}


class DataOutOfTheLog(logging.Filter):
    """Celery's task lines show results and error messages, which may quote a person's data; a log cannot be
    erased. They keep the task, id, runtime and the error's type: the dead-letter table (erasable) has the rest."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if not (isinstance(args, dict) and isinstance(record.msg, str)):
            return True
        if "return_value" in args:  # "Task x[id] succeeded in 0.01s: <result>"
            record.msg = record.msg.replace(": %(return_value)s", "")
        elif "exc" in args and "description" in args:  # "Task x[id] raised unexpected: <exc>" + traceback
            record.args = {**args, "exc": str(args["exc"]).split("(", 1)[0]}
            record.msg += " (see `timber-tasks dlq list`)"
            record.exc_info, record.exc_text = None, None
        return True


logging.getLogger("celery.app.trace").addFilter(DataOutOfTheLog())


def make_celery(settings: Settings | None = None) -> Celery:
    settings = settings or Settings.load()
    register_serializer()
    # argsrepr/kwargsrepr travel in clear (broker, Flower): say only that the arguments are sealed.
    signals.before_task_publish.connect(hide_argsrepr, weak=False, dispatch_uid="timber-hide-argsrepr")
    result_errors.install()
    poison.install_transport_guard()
    broker = settings.resolved_broker_url
    if is_embedded(broker):
        transport_options = embedded_transport_options(settings)
    else:
        transport_options = {"visibility_timeout": settings.visibility_timeout}
        if is_redis(broker):
            # kombu scans for a dead worker's unacked jobs only every interval x throttle seconds
            # (100 s by default); scan every sweep instead, so they return soon after the timeout.
            transport_options.update(unacked_restore_interval=settings.redelivery_sweep,
                                     unacked_restore_throttle=1)
    if not settings.result_backend_url:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = Celery("timber_tasks", broker=broker, backend=settings.resolved_result_backend_url,
                 include=TASK_MODULES)
    app.conf.update(
        task_serializer=SERIALIZER,  # JSON sealed with the key ring: no plaintext on broker or backend
        result_serializer=SERIALIZER,
        accept_content=[SERIALIZER],
        result_accept_content=[SERIALIZER],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_queues=[Queue(name) for name in QUEUES],
        task_default_queue="maintenance",
        task_routes=ROUTES,
        task_time_limit=settings.task_time_limit,
        broker_transport_options=transport_options,
        result_backend_transport_options=transport_options if is_redis(broker) else {},
        broker_connection_retry_on_startup=True,
        worker_send_task_events=True,  # Flower and `celery events` need them
        task_send_sent_event=True,
        task_track_started=True,
        result_extended=True,
        result_expires=86_400,
        timezone="UTC",
        enable_utc=True,
        worker_hijack_root_logger=False,
        worker_consumer="timber_tasks.tasks.poison:PoisonAwareConsumer",  # refused messages become dead letters
        beat_schedule_filename=str((settings.data_dir / "celerybeat-schedule").resolve()),
    )
    if is_redis(broker):
        # One beat at a time: RedBeat keeps the schedule in Redis behind a lock.
        # The lock is only renewed when beat wakes: wake well within its timeout. Our subclass keeps
        # beat running through a Redis restart (timber_tasks/beat_scheduler.py).
        app.conf.update(beat_scheduler="timber_tasks.beat_scheduler:ResilientRedBeatScheduler",
                        redbeat_redis_url=broker, redbeat_redis_options={}, redbeat_key_prefix="timber:redbeat:",
                        redbeat_lock_timeout=60, beat_max_loop_interval=20)
    app.timber_settings = settings
    app.loader.import_default_modules()  # registers the shared tasks on this app
    from timber_tasks import beat

    app.conf.beat_schedule = beat.load_schedule(settings.beat_schedule_file, app)
    return app


def check_app_config(app: Celery, pool_time_limits: list[int] | None = None) -> None:
    """Refuse settings that lose or corrupt jobs; every message says what to change."""
    conf = app.conf
    for key in ("accept_content", "result_accept_content"):
        if list(conf[key] or []) != [SERIALIZER]:
            raise ConfigError(f"Celery {key} is {conf[key]!r}: only [{SERIALIZER!r}] (sealed JSON) is safe "
                              "(pickle runs code on load; plain JSON shows encrypted fields)")
    for key in ("task_serializer", "result_serializer"):
        if conf[key] != SERIALIZER:
            raise ConfigError(f"Celery {key} is {conf[key]!r}: jobs must be {SERIALIZER!r} (sealed JSON)")
    if not (conf.task_acks_late and conf.task_reject_on_worker_lost):
        raise ConfigError("task_acks_late and task_reject_on_worker_lost must both be on, or a crash loses jobs")
    if is_redis(str(conf.broker_url)):
        visibility = int((conf.broker_transport_options or {}).get("visibility_timeout", 3600))
        limits = [int(conf.task_time_limit or 0), *(pool_time_limits or [])]
        longest = max(limits)
        if visibility <= longest:
            raise ConfigError(
                f"Redis visibility_timeout ({visibility}s) must be larger than the longest time limit "
                f"({longest}s), or Redis hands running jobs to a second worker: raise TIMBER_VISIBILITY_TIMEOUT "
                "or lower the time limits"
            )


app = make_celery()


def _load_for_processes(sender: Any = None) -> None:
    own_limit = getattr(sender, "time_limit", None)  # --time-limit of this worker, if any
    check_app_config(app, [int(own_limit)] if own_limit else [])
    runtime.initialize_timber(create_tables=True)


@signals.worker_init.connect
def _check_on_start(sender: Any = None, **_: Any) -> None:
    """The worker's main process: refuse unsafe settings, bad YAML or missing keys before taking any job."""
    startup.exit_unless_loaded("worker", lambda: _load_for_processes(sender))


@signals.worker_process_init.connect
def _fresh_process(**_: Any) -> None:
    """Each pool process loads the registry once and opens its own connections, never the parent's.

    The main process has checked the configuration; a failure here (the database briefly down)
    is logged by Celery and retried at the first job, so a pool does not respawn in a loop.
    """
    runtime.initialize_timber(create_tables=False)


@signals.beat_init.connect
def _beat_start(**_: Any) -> None:
    startup.exit_unless_loaded("beat", lambda: runtime.initialize_timber(create_tables=True))


def load_for_flower() -> None:
    """Flower reads the same models and keys (it shows their jobs): it starts only when they load."""
    runtime.build_timber(create_tables=False, app_role=False).close()


startup.guard_flower(load_for_flower)
