"""Alembic revisions generated from the YAML registry and applied by `db upgrade`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sqlalchemy import inspect, text

from timber_tasks import initialize_timber, migrations

V1 = """
version: "1"
models:
  - name: Task
    table_name: tasks
    columns:
      - {name: id, type: Integer, primary_key: true}
      - {name: title, type: String(100), nullable: false}
"""

V2 = V1 + """
      - {name: priority, type: String(10), default: normal, nullable: false}
  - name: Label
    table_name: labels
    columns:
      - {name: id, type: Integer, primary_key: true}
"""


def _columns(timber, table: str) -> set[str]:  # type: ignore[no-untyped-def]
    return {c["name"] for c in inspect(timber.db.engine).get_columns(table)}


def test_yaml_changes_become_revisions_and_upgrade_applies_them(
    database_url: str, write_models: Callable[..., Path], tmp_path: Path
) -> None:
    folder = write_models({"m.yaml": V1})
    timber = initialize_timber(model_config_dirs=[folder], database_url=database_url, create_tables=False)
    first = migrations.revision(timber, "create tasks")
    assert first is not None and "create_table('tasks'" in Path(first).read_text().replace('"', "'")
    migrations.upgrade(timber)
    with timber.db.session_scope() as s:
        s.execute(text("INSERT INTO tasks (id, title) VALUES (1, 'existing row')"))
    assert migrations.revision(timber, "nothing") is None  # database matches YAML

    (folder / "m.yaml").write_text(V2)
    timber = initialize_timber(model_config_dirs=[folder], database_url=database_url, create_tables=False)
    second = migrations.revision(timber, "add priority and labels")
    body = Path(second or "").read_text().replace('"', "'")
    assert "add_column" in body and "'priority'" in body and "create_table('labels'" in body
    migrations.upgrade(timber)
    assert "priority" in _columns(timber, "tasks")
    assert migrations.current_revision(timber) == migrations.head_revision(timber)
    with timber.db.session_scope() as s:  # the server default filled the existing row
        assert s.execute(text("SELECT priority FROM tasks WHERE id = 1")).scalar() == "normal"


def test_tables_and_columns_missing_from_the_yaml_are_never_dropped(
    database_url: str, write_models: Callable[..., Path]
) -> None:
    folder = write_models({"m.yaml": V1})
    timber = initialize_timber(model_config_dirs=[folder], database_url=database_url, create_tables=False)
    with timber.db.session_scope() as s:
        s.execute(text("CREATE TABLE legacy_reports (id INTEGER PRIMARY KEY, body TEXT)"))
        s.execute(text("CREATE TABLE tasks (id INTEGER NOT NULL PRIMARY KEY, title VARCHAR(100) NOT NULL, old TEXT)"))
    diffs = migrations.pending_changes(timber)
    assert diffs and not [d for d in diffs if d[0].startswith("remove")]  # only the platform tables to add
    body = Path(migrations.revision(timber, "platform tables") or "").read_text().split("def downgrade")[0]
    assert "drop_table" not in body and "drop_column" not in body
    migrations.upgrade(timber)
    assert migrations.pending_changes(timber) == []
    tables = set(inspect(timber.db.engine).get_table_names())
    assert "legacy_reports" in tables and "old" in _columns(timber, "tasks")
