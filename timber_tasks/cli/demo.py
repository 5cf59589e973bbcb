"""`timber-tasks demo`: the README's run command on the embedded default."""

from __future__ import annotations

import os
from pathlib import Path

from rich.table import Table

from timber_tasks.cli.common import AppName, ConfigDirs, DatabaseUrl, console, err_console, reported_errors
from timber_tasks.features.encryption import generate_key
from timber_tasks.runtime import initialize_timber
from timber_tasks.settings import Settings

DEV_KEY_FILE = "dev-encryption.key"


def development_key(settings: Settings) -> str:
    """The local development key under the data dir, made on first use.

    Only this demo path does it, so `make run` works on a fresh machine; the library
    itself refuses encrypted models without TIMBER_ENCRYPTION_KEYS.
    """
    path = Path(settings.data_dir) / DEV_KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(generate_key() + "\n")
    err_console.print(
        f"[bold yellow]WARNING: TIMBER_ENCRYPTION_KEYS is not set; using the local DEVELOPMENT key in "
        f"{path.resolve()}. Never use it in production: set TIMBER_ENCRYPTION_KEYS "
        "(`timber-tasks keys generate`).[/bold yellow]", highlight=False)
    return path.read_text().strip()


def demo(database_url: DatabaseUrl = None, dirs: ConfigDirs = None, app_name: AppName = None) -> None:
    """Load the models, create their tables and show what was registered."""
    with reported_errors():
        settings = Settings.load(app_name=app_name)
        keys = None if settings.encryption_keys else development_key(settings)
        timber = initialize_timber(app_name=app_name, model_config_dirs=list(dirs) if dirs else None,
                                   database_url=database_url, encryption_keys=keys)
    console.print(f"Timber for app [bold]{timber.app_name}[/bold] on {timber.db!r}")
    table = Table("model", "table", "app")
    for spec in timber.registry.specs():
        table.add_row(spec.name, spec.table_name, spec.app or "shared")
    console.print(table)
    console.print(f"{len(timber.registry)} models; health: {timber.db.health_check()}")
