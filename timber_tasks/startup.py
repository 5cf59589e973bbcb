"""Start-up checks of workers, beat and Flower: a process whose configuration does not load never starts.

Celery runs `worker_init` and `beat_init` receivers inside `Signal.send`, which logs and
swallows their exceptions: a worker whose models or keys fail to load would say "ready"
and ack jobs it cannot run. So the checks print what is wrong and exit non-zero themselves.
Flower has no start-up signal: its app class is wrapped, so every command that starts it
(`timber-tasks flower`, `celery -A timber_tasks flower`) asks for a real login.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn

from timber_tasks.errors import ConfigError

log = logging.getLogger("timber_tasks.startup")

START_WAIT = 60.0  # seconds a starting process waits for a server that is briefly away
MIN_PASSWORD = 8  # Flower's basic auth: an empty or trivially short password is refused


def exit_unless_loaded(process: str, load: Callable[[], Any]) -> Any:
    """Run load(); on a failure print the reason (one line; a traceback with TIMBER_DEBUG) and exit 1.

    A server that is briefly away (the database restarting) is no configuration error: that is
    retried for START_WAIT seconds before the process gives up.
    """
    deadline = time.monotonic() + START_WAIT
    while True:
        try:
            return load()
        except Exception as exc:
            if _passing(exc) and time.monotonic() < deadline:
                log.warning("%s waits for a server: %s", process, str(exc).splitlines()[0])
                time.sleep(1.0)
                continue
            _refuse(process, exc)


def _passing(exc: BaseException | None) -> bool:
    """A transient fault, itself or as the cause of ours (DatabaseError wraps the driver's)."""
    from timber_tasks.jobs.faults import is_transient

    while exc is not None:
        if is_transient(exc):
            return True
        exc = exc.__cause__
    return False


def _refuse(process: str, exc: Exception) -> NoReturn:
    from timber_tasks.cli.common import debugging
    from timber_tasks.cli.failures import explain

    message = explain(exc) or f"{type(exc).__name__}: {exc}"
    if debugging():  # the traceback only when asked for, as every command does
        log.critical("%s refuses to start: %s", process, message, exc_info=True)
    # Said once, on stderr: Celery's log is often that same terminal.
    print(f"error: {process} refuses to start: {message}", file=sys.stderr, flush=True)
    os._exit(1)  # not SystemExit: Celery's start-up code would catch and log it, then go on


def check_basic_auth(value: str | list[str] | None) -> list[str]:
    """The `user:password` logins, or ConfigError naming FLOWER_BASIC_AUTH and what is wrong."""
    logins = value.split(",") if isinstance(value, str) else list(value or [])
    logins = [login.strip() for login in logins if login.strip()]
    if not logins:
        raise ConfigError("Flower needs authentication: set FLOWER_BASIC_AUTH=user:password "
                          "(or pass --basic-auth); an open dashboard shows job arguments and results")
    for login in logins:
        user, sep, password = login.partition(":")
        if not sep or not user:
            raise ConfigError(f"FLOWER_BASIC_AUTH: {user or login!r} is not user:password")
        if len(password) < MIN_PASSWORD:
            raise ConfigError(f"FLOWER_BASIC_AUTH: the password of {user!r} is {len(password)} characters; "
                              f"use at least {MIN_PASSWORD}")
    return logins


def guard_flower(load_config: Callable[[], Any]) -> None:
    """Wrap Flower's app so it starts only with a valid login and a configuration that loads.

    Only where Flower is already imported (the `celery` command imports its plugin first):
    other processes never pay for importing it.
    """
    if "flower.command" not in sys.modules:
        return
    from flower.app import Flower

    if getattr(Flower, "_timber_guarded", False):
        return
    original_init = Flower.__init__

    def checked_init(self: Any, *args: Any, **kwargs: Any) -> None:
        options = kwargs.get("options")
        exit_unless_loaded("flower", lambda: check_basic_auth(getattr(options, "basic_auth", None)))
        exit_unless_loaded("flower", load_config)
        original_init(self, *args, **kwargs)

    Flower.__init__ = checked_init
    Flower._timber_guarded = True
