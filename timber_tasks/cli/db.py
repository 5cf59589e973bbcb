"""`timber-tasks db`: migrations generated from the YAML registry, and health."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from timber_tasks.cli.common import AppName, ConfigDirs, DatabaseUrl, console, reported_errors

if TYPE_CHECKING:
    from timber_tasks.runtime import Timber

app = typer.Typer(no_args_is_help=True, help="Database migrations and health.", rich_markup_mode=None)


def _timber(database_url: str | None, dirs: ConfigDirs, app_name: str | None) -> Timber:
    # Migrations change the schema: they connect as the login (owner) role, not as the app's role.
    from timber_tasks.runtime import initialize_timber

    # They read and change the schema only, never an encrypted value: no TIMBER_ENCRYPTION_KEYS needed.
    return initialize_timber(app_name=app_name, model_config_dirs=list(dirs) if dirs else None,
                             database_url=database_url, create_tables=False, app_role=False, require_keys=False)


@app.command()
def revision(
    message: Annotated[str, typer.Option("--message", "-m", help="What the revision does.")],
    database_url: DatabaseUrl = None, dirs: ConfigDirs = None, app_name: AppName = None,
) -> None:
    """Write a revision for what the YAML models have and the database lacks."""
    from timber_tasks import migrations

    with reported_errors():
        path = migrations.revision(_timber(database_url, dirs, app_name), message)
    console.print(f"wrote {path}" if path else "no changes: the database matches the YAML models")


@app.command()
def upgrade(
    target: Annotated[str, typer.Argument(help="Revision to reach.")] = "head",
    autogenerate: Annotated[bool, typer.Option(help="First write a revision for pending YAML changes.")] = False,
    database_url: DatabaseUrl = None, dirs: ConfigDirs = None, app_name: AppName = None,
) -> None:
    """Apply revisions up to TARGET (default: the newest)."""
    from timber_tasks import migrations

    with reported_errors():
        timber = _timber(database_url, dirs, app_name)
        if autogenerate:
            migrations.upgrade(timber, "head")
            path = migrations.revision(timber, "sync with YAML models")
            if path:
                console.print(f"wrote {path}")
        migrations.upgrade(timber, target)
        console.print(f"database at revision {migrations.current_revision(timber)}")


@app.command()
def check(database_url: DatabaseUrl = None, dirs: ConfigDirs = None, app_name: AppName = None) -> None:
    """Exit 1 when the database differs from the YAML models, listing the differences."""
    from timber_tasks import migrations

    with reported_errors():
        diffs = migrations.pending_changes(_timber(database_url, dirs, app_name))
    for line in migrations.describe_changes(diffs):
        console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)
    if diffs:
        console.print(f"{len(diffs)} difference(s): run `timber-tasks db upgrade --autogenerate` "
                      "(or `timber-tasks db revision -m ...` to review the revision first)", soft_wrap=True)
        raise typer.Exit(1)
    console.print("[green]the database matches the YAML models[/green]")


@app.command()
def health(database_url: DatabaseUrl = None, dirs: ConfigDirs = None, app_name: AppName = None) -> None:
    """Print the database health check and pool status as JSON."""
    with reported_errors():
        timber = _timber(database_url, dirs, app_name)
        report = {"health": timber.db.health_check(), "pool": timber.db.pool_status()}
    console.print_json(json.dumps(report))
    if not report["health"]["ok"]:
        raise typer.Exit(1)
