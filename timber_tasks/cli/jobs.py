"""`timber-tasks dlq` and `timber-tasks outbox`: failed jobs and unpublished ones."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from timber_tasks.cli.common import console, platform_db, reported_errors

dlq = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                  help="Jobs that finally failed: list, show and re-run them.")
outbox_app = typer.Typer(no_args_is_help=True, help="The transactional outbox.", rich_markup_mode=None)


@dlq.command("list")
def dlq_list(
    all_: Annotated[bool, typer.Option("--all", help="Include letters already retried.")] = False,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 100,
) -> None:
    """List dead letters: id, task, attempts, error."""
    from timber_tasks.jobs import dead_letters

    with reported_errors():  # no job arguments are read: runs without TIMBER_ENCRYPTION_KEYS
        letters = dead_letters.list_letters(platform_db(), include_retried=all_, limit=limit, payload=False)
    table = Table("id", "task", "attempts", "failed at", "error", "retried as")
    for letter in letters:
        failed_at = letter.failed_at.isoformat(" ", "seconds")
        table.add_row(str(letter.id), letter.task_name, str(letter.attempts), failed_at,
                      f"{letter.error_type}: {letter.error}"[:120], letter.retry_task_id or "")
    console.print(table)
    console.print(f"{len(letters)} dead letter(s)")


@dlq.command("show")
def dlq_show(letter_id: int) -> None:
    """Print one dead letter in full, payload and traceback included."""
    from timber_tasks.jobs import dead_letters
    from timber_tasks.models.records import to_jsonable
    from timber_tasks.tasks.base import get_timber

    with reported_errors():
        letter = dead_letters.get(get_timber().db, letter_id)
    console.print_json(json.dumps(to_jsonable(letter)))


@dlq.command("retry")
def dlq_retry(letter_id: int) -> None:
    """Send a dead letter's job again, with the same arguments."""
    from timber_tasks.celery_app import app
    from timber_tasks.jobs import dead_letters
    from timber_tasks.tasks.base import get_timber

    with reported_errors():
        db = get_timber().db
        letter = dead_letters.get(db, letter_id)
        task = app.tasks[letter.task_name]
        result = task.apply_async(list(letter.args), dict(letter.kwargs))
        dead_letters.mark_retried(db, letter_id, result.id)
    console.print(f"dead letter {letter_id} sent again as task {result.id}")


@outbox_app.command("relay")
def outbox_relay() -> None:
    """Publish what is due now: pending rows, and embedded-broker jobs that never finished."""
    from timber_tasks.tasks import relay
    from timber_tasks.tasks.base import get_timber

    with reported_errors():
        from timber_tasks.celery_app import app

        report = relay.relay(app, get_timber())
    console.print(f"published {report['published']} of {report['due']} due job(s)")


@outbox_app.command("status")
def outbox_status() -> None:
    """Count outbox rows by status."""
    from timber_tasks.jobs import outbox

    with reported_errors():  # counts only: runs without TIMBER_ENCRYPTION_KEYS
        console.print(outbox.counts(platform_db()) or "the outbox is empty")
