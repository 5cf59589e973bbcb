"""`timber-tasks models`: check and list the YAML model registry."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from timber_tasks.cli.common import AppName, ConfigDirs, console, reported_errors

app = typer.Typer(no_args_is_help=True, help="Check and list YAML models.", rich_markup_mode=None)


@app.command()
def validate(
    dirs: Annotated[list[Path], typer.Argument(help="Folders of model YAML files.")],
    app_name: AppName = None,
    dialect: Annotated[str | None, typer.Option(
        help="Dialect to check types against (sqlite, postgresql); default: that of DATABASE_URL.")] = None,
) -> None:
    """Load every model under DIRS without touching a database; report every error at once."""
    from sqlalchemy.engine import make_url

    import timber_tasks.features.encryption  # noqa: F401  (the encryption plug-in builds encrypted models)
    from timber_tasks.errors import ModelConfigError
    from timber_tasks.models.loader import find_model_files
    from timber_tasks.models.registry import ModelRegistry
    from timber_tasks.settings import Settings

    with reported_errors():
        settings = Settings.load()
        if dialect is None:
            dialect = make_url(settings.resolved_database_url).get_backend_name()
            source = "DATABASE_URL" if settings.database_url else "the embedded default, DATABASE_URL unset"
        else:
            source = "--dialect"
        if not find_model_files(dirs):
            raise ModelConfigError(f"no model files (*.yaml, *.yml) in {', '.join(map(str, dirs))}")
        registry = ModelRegistry.from_dirs(dirs, app_name=app_name or "timber", dialect=dialect)
    console.print(f"[green]ok[/green]: {len(registry)} models in {len(registry.files)} files, "
                  f"checked for {dialect} ({source})")


@app.command("list")
def list_models(dirs: ConfigDirs = None, app_name: AppName = None) -> None:
    """List the registered models with their tables, apps and features."""
    import timber_tasks.features.encryption  # noqa: F401
    from timber_tasks.models.registry import ModelRegistry
    from timber_tasks.settings import Settings

    settings = Settings.load(app_name=app_name, model_config_dirs=tuple(dirs) if dirs else None)
    with reported_errors():
        registry = ModelRegistry.from_dirs(settings.model_config_dirs, app_name=settings.app_name)
    table = Table("model", "table", "app", "columns", "features", "file")
    for spec in registry.specs():
        features = [f for f in ("encryption", "caching", "gdpr", "vector_search")
                    if getattr(spec.spec, f) is not None and getattr(spec.spec, f).enabled]
        table.add_row(spec.name, spec.table_name, spec.app or "shared", str(len(spec.all_columns)),
                      ", ".join(features), spec.file)
    console.print(table)
