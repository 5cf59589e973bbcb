"""`timber-tasks demo`: the README's run command on the embedded default."""

from __future__ import annotations

from rich.table import Table

from timber_tasks.cli.common import AppName, ConfigDirs, DatabaseUrl, console, reported_errors
from timber_tasks.runtime import initialize_timber


def demo(database_url: DatabaseUrl = None, dirs: ConfigDirs = None, app_name: AppName = None) -> None:
    """Load the models, create their tables and show what was registered."""
    with reported_errors():
        timber = initialize_timber(app_name=app_name, model_config_dirs=list(dirs) if dirs else None,
                                   database_url=database_url)
    console.print(f"Timber for app [bold]{timber.app_name}[/bold] on {timber.db!r}")
    table = Table("model", "table", "app")
    for spec in timber.registry.specs():
        table.add_row(spec.name, spec.table_name, spec.app or "shared")
    console.print(table)
    console.print(f"{len(timber.registry)} models; health: {timber.db.health_check()}")
