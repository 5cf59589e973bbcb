"""Alembic revisions generated from the YAML registry; nothing outside the YAML is ever dropped."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData

from timber_tasks.errors import MigrationError
from timber_tasks.gdpr import tables as gdpr_tables  # noqa: F401  (puts the GDPR tables on system_metadata)
from timber_tasks.jobs.tables import system_metadata

if TYPE_CHECKING:
    from timber_tasks.runtime import Timber

HERE = Path(__file__).parent


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Leave alone what the database has and the YAML does not: tables and columns are never dropped."""
    return not (reflected and compare_to is None and type_ in {"table", "column"})


def target_metadata(timber: Timber) -> MetaData:
    """The schema migrations aim at: the YAML models plus the platform's own tables."""
    combined = MetaData()
    for metadata in (timber.registry.metadata, system_metadata):
        for table in metadata.sorted_tables:
            table.to_metadata(combined)
    return combined


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | Literal[False]:
    """Encrypted columns hold Fernet tokens in TEXT, sealed job arguments JSON: revisions import no type of ours."""
    from timber_tasks.features.encryption import EncryptedType
    from timber_tasks.jobs.sealing import SealedJSON

    if type_ == "type" and isinstance(obj, EncryptedType):
        return "sa.Text()"
    if type_ == "type" and isinstance(obj, SealedJSON):
        return "sa.JSON()"
    return False


def alembic_config(timber: Timber) -> Config:
    versions = timber.settings.migrations_dir / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.set_main_option("version_locations", str(versions.resolve()))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes["timber"] = timber
    return cfg


def revision(timber: Timber, message: str) -> str | None:
    """Write a revision for what the YAML has and the database lacks; None when nothing differs."""
    if not pending_changes(timber):
        return None
    try:
        script = command.revision(alembic_config(timber), message=message, autogenerate=True)
    except Exception as exc:
        raise MigrationError(f"generating a revision failed: {exc}") from exc
    if isinstance(script, list):
        script = script[0]
    return script.path if script is not None else None


def upgrade(timber: Timber, target: str = "head") -> None:
    try:
        command.upgrade(alembic_config(timber), target)
    except Exception as exc:
        raise MigrationError(f"upgrading the database to {target!r} failed: {exc}") from exc


def current_revision(timber: Timber) -> str | None:
    with timber.db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision(timber: Timber) -> str | None:
    return ScriptDirectory.from_config(alembic_config(timber)).get_current_head()


def pending_changes(timber: Timber) -> list[Any]:
    """The differences autogenerate would write, database against YAML."""
    with timber.db.engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn, opts={"include_object": include_object, "compare_type": True}
        )
        return list(compare_metadata(ctx, target_metadata(timber)))


def describe_changes(diffs: list[Any]) -> list[str]:
    """Alembic's diff tuples as lines an operator reads: table, column, change."""
    lines: list[str] = []
    for diff in diffs:
        items = diff if isinstance(diff, list) else [diff]  # modify_* diffs come grouped per column
        for item in items:
            lines.append(_describe(item))
    return lines


def _describe(item: tuple[Any, ...]) -> str:
    kind = item[0]
    if kind in ("add_table", "remove_table"):
        table = item[1]
        columns = ", ".join(c.name for c in table.columns)
        return f"table {table.name}: {'missing' if kind == 'add_table' else 'not in the YAML'} ({columns})"
    if kind in ("add_column", "remove_column"):
        _, _, table, column = item
        state = "missing" if kind == "add_column" else "not in the YAML"
        return f"{table}.{column.name}: column {state} ({column.type})"
    if kind in ("add_index", "remove_index"):
        index = item[1]
        return (f"{index.table.name}: index {index.name} {'missing' if kind == 'add_index' else 'not in the YAML'} "
                f"({', '.join(c.name for c in index.columns)})")
    if kind in ("add_constraint", "remove_constraint", "add_fk", "remove_fk"):
        constraint = item[1]
        table = getattr(getattr(constraint, "table", None), "name", "?")
        return f"{table}: {kind.replace('_', ' ')} {getattr(constraint, 'name', None) or ''}".rstrip()
    if kind.startswith("modify_"):
        _, _, table, column, _, old, new = item
        what = kind.removeprefix("modify_")
        return f"{table}.{column}: {what} is {old} in the database, {new} in the YAML"
    return " ".join(str(part) for part in item)
