"""The `timber-tasks` command: one sub-command group per module."""

from __future__ import annotations

import typer

from timber_tasks.cli import db, demo, jobs, keys, models, workers

app = typer.Typer(no_args_is_help=True, help="Timber models and jobs on Celery workers.")
app.add_typer(models.app, name="models")
app.add_typer(db.app, name="db")
app.add_typer(jobs.dlq, name="dlq")
app.add_typer(jobs.outbox_app, name="outbox")
app.add_typer(keys.app, name="keys")
app.command("demo")(demo.demo)
app.command("worker")(workers.worker)
app.command("beat")(workers.beat)
app.command("flower")(workers.flower)


def main() -> None:
    app()
