"""`timber-tasks worker|beat|flower`: start Celery processes from the project's YAML."""

from __future__ import annotations

import os
from typing import Annotated, Any

import click
import typer

from timber_tasks.cli.common import reported_errors

LogLevel = Annotated[str, typer.Option("--loglevel", "-l", help="Celery log level.")]


def worker(
    pool: Annotated[str, typer.Option("--pool", "-p", help="Pool name: workers/NAME.yaml.")] = "persistence",
    loglevel: LogLevel = "INFO",
) -> None:
    """Start a worker for one pool of workers/*.yaml (queues, pool type, concurrency, limits)."""
    from timber_tasks import pools
    from timber_tasks.celery_app import app, check_app_config, settings_of

    with reported_errors():
        config = pools.find_pool(settings_of(app).workers_dir, pool)
        check_app_config(app, [config.time_limit] if config.time_limit else [])
    _run(app, config.worker_argv(loglevel))


def beat(loglevel: LogLevel = "INFO") -> None:
    """Start beat with the entries of beat_schedule.yaml (RedBeat's lock when Redis is the broker)."""
    with reported_errors():
        from timber_tasks.celery_app import app
    _run(app, ["beat", "-l", loglevel])


def flower(
    port: Annotated[int, typer.Option(envvar="FLOWER_PORT", help="HTTP port.")] = 5555,
    address: Annotated[str, typer.Option(help="Listen address.")] = "127.0.0.1",
    basic_auth: Annotated[str | None, typer.Option(
        envvar="FLOWER_BASIC_AUTH", help="user:password[,user2:password2]; required.")] = None,
) -> None:
    """Start Flower; it refuses to run without a login (password of 8 characters or more)."""
    from timber_tasks.startup import check_basic_auth

    with reported_errors():
        check_basic_auth(basic_auth)
        from timber_tasks.celery_app import app, load_for_flower

        load_for_flower()
    os.environ.setdefault("FLOWER_UNAUTHENTICATED_API", "false")
    _run(app, ["flower", f"--port={port}", f"--address={address}", f"--basic-auth={basic_auth}"])


def _run(app: Any, argv: list[str]) -> None:
    """Run a Celery command; its exit status is ours (a worker that died of an error exits 1, as `celery` does).

    Not `app.start`/`worker_main`: they drop the status the command exits with, so a crashed worker said 0.
    """
    from celery.bin.celery import celery as celery_command

    celery_command.params[0].default = app  # the --app option, as Celery.start sets it
    try:
        code = celery_command.main(args=argv, prog_name="celery", standalone_mode=False)
    except click.exceptions.Exit as exit_:
        code = exit_.exit_code
    finally:
        celery_command.params[0].default = None
    if code:
        raise typer.Exit(code)
