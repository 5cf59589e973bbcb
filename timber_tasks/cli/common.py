"""What every command shares: the console, settings options and error reporting."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from timber_tasks.errors import ModelConfigErrors, TimberError

if TYPE_CHECKING:
    from timber_tasks.db import DatabaseManager

DEBUG_ENV = "TIMBER_DEBUG"
console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # errors stay on one line: copyable, greppable

DatabaseUrl = Annotated[
    str | None, typer.Option("--database-url", envvar="DATABASE_URL", help="SQLAlchemy URL.")
]
ConfigDirs = Annotated[
    list[Path] | None,
    typer.Option("--models", help="Model YAML folder (repeatable); default TIMBER_MODEL_CONFIG_DIRS."),
]
AppName = Annotated[str | None, typer.Option("--app", envvar="TIMBER_APP_NAME", help="App name.")]


def platform_db() -> DatabaseManager:
    """The database of the settings, for commands that read only the platform's tables (no models, no keys)."""
    from timber_tasks.db import DatabaseManager
    from timber_tasks.settings import Settings

    settings = Settings.load()
    return DatabaseManager(settings.resolved_database_url, slow_query_ms=settings.slow_query_ms)


def debugging() -> bool:
    """Tracebacks asked for: `timber-tasks --debug ...` or TIMBER_DEBUG=1."""
    return os.environ.get(DEBUG_ENV, "").lower() not in ("", "0", "false", "no")


@contextmanager
def reported_errors() -> Iterator[None]:
    """Turn our errors into a readable message and exit code 1, not a traceback (unless debugging)."""
    try:
        yield
    except ModelConfigErrors as exc:
        if debugging():
            raise
        err_console.print(f"[red]{len(exc.errors)} error(s) in model configuration:[/red]")
        for e in exc.errors:
            err_console.print(f"  - {e}", markup=False, highlight=False)
        raise typer.Exit(1) from exc
    except TimberError as exc:
        if debugging():
            raise
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from exc
