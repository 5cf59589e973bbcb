"""The `timber-tasks` command: one sub-command group per module."""

from __future__ import annotations

import os

import typer

from timber_tasks.cli import db, demo, failures, gdpr, jobs, keys, market, models, vectors, workers

# Plain help (no rich markup): rendering it with rich imports a Markdown parser, a third of `--help`.
app = typer.Typer(no_args_is_help=True, help="Timber models and jobs on Celery workers.", rich_markup_mode=None)
app.add_typer(models.app, name="models")
app.add_typer(db.app, name="db")
app.add_typer(jobs.dlq, name="dlq")
app.add_typer(jobs.outbox_app, name="outbox")
app.add_typer(keys.app, name="keys")
app.add_typer(market.app, name="market")
app.add_typer(gdpr.app, name="gdpr")
app.add_typer(vectors.app, name="vectors")
app.command("demo")(demo.demo)
app.command("worker")(workers.worker)
app.command("beat")(workers.beat)
app.command("flower")(workers.flower)


@app.callback()
def options(debug: bool = typer.Option(False, "--debug", help=f"Show tracebacks (or set {failures.DEBUG_ENV}=1).")
            ) -> None:
    if debug:
        os.environ[failures.DEBUG_ENV] = "1"


def main() -> None:
    failures.run_reporting_failures(app)
