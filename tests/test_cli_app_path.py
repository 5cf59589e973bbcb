"""The commands a new user meets first: missing tables, keys, `models validate`, `db check`."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from timber_tasks import initialize_timber

from .test_cli import SHIPPED, run
from .test_cli_failures import failure

ARRAY_MODEL = """
version: "1.0"
models:
  - name: Tagged
    table_name: tagged
    columns:
      - name: id
        type: Integer
        primary_key: true
      - name: tags
        type: ARRAY(String(20))
"""
BROKEN_FILES = {
    "a_syntax.yaml": 'version: "1.0"\nmodels: [\n  - name: x\n',
    "b_schema.yaml": """
        version: "1.0"
        models:
          - name: B
            table_name: bs
            columns:
              - name: id
                type: Bogus
                primary_key: true
    """,
    "c_cross.yaml": """
        version: "1.0"
        models:
          - name: C
            table_name: cs
            columns:
              - name: id
                type: Integer
                primary_key: true
              - name: other
                type: Integer
                foreign_key: nowhere.id
    """,
}


@pytest.mark.parametrize("command", [("dlq", "list"), ("outbox", "status"), ("dlq", "show", "1")])
def test_a_database_without_the_platform_tables_gives_one_line_and_the_command_that_fixes_it(
    database_url: str, tmp_path: Path, command: tuple[str, ...]
) -> None:
    stderr = failure(run(*command, cwd=tmp_path, env={"DATABASE_URL": database_url,
                                                      "TIMBER_MODEL_CONFIG_DIRS": SHIPPED}))
    assert "has no table timber_" in stderr and "timber-tasks db upgrade --autogenerate" in stderr
    fixed = run("db", "upgrade", "--autogenerate", cwd=tmp_path,
                env={"DATABASE_URL": database_url, "TIMBER_MODEL_CONFIG_DIRS": SHIPPED})
    assert fixed.returncode == 0, fixed.stderr
    again = run(*command, cwd=tmp_path, env={"DATABASE_URL": database_url, "TIMBER_MODEL_CONFIG_DIRS": SHIPPED})
    assert (again.returncode == 0) == (command != ("dlq", "show", "1")), again.stderr  # letter 1 does not exist


def test_db_check_lists_table_column_and_change_one_per_line(database_url: str, tmp_path: Path) -> None:
    timber = initialize_timber(model_config_dirs=[SHIPPED], database_url=database_url)
    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE users DROP COLUMN is_active"))
    engine.dispose()
    timber.close()
    done = run("db", "check", cwd=tmp_path, env={"DATABASE_URL": database_url, "TIMBER_MODEL_CONFIG_DIRS": SHIPPED})
    assert done.returncode == 1, done.stderr
    lines = [line.strip() for line in done.stdout.strip().splitlines()]
    assert "users.is_active: column missing (BOOLEAN)" in lines
    assert "Table(" not in done.stdout and "Column(" not in done.stdout and len(lines) <= 4, done.stdout


def test_reading_only_the_platforms_bookkeeping_needs_no_key_and_reading_job_arguments_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path}/x.db"
    initialize_timber(model_config_dirs=[SHIPPED], database_url=url).close()
    monkeypatch.delenv("TIMBER_ENCRYPTION_KEYS")
    env = {"DATABASE_URL": url, "TIMBER_MODEL_CONFIG_DIRS": SHIPPED}
    for command in (("dlq", "list"), ("outbox", "status"), ("db", "check"), ("db", "health"),
                    ("models", "validate", SHIPPED), ("models", "list"), ("keys", "generate")):
        done = run(*command, cwd=tmp_path, env=env)
        assert done.returncode == 0, (command, done.stderr)
    for command in (("dlq", "show", "1"), ("outbox", "relay"), ("keys", "rotate"), ("market", "status")):
        assert "TIMBER_ENCRYPTION_KEYS" in failure(run(*command, cwd=tmp_path, env=env)), command


def test_models_validate_checks_for_the_configured_dialect_and_says_which(
    write_models: Callable[..., Path], tmp_path: Path
) -> None:
    folder = write_models({"tagged.yaml": ARRAY_MODEL})
    embedded = run("models", "validate", str(folder), cwd=tmp_path)
    assert embedded.returncode == 1 and "ARRAY needs PostgreSQL, but the database is sqlite" in embedded.stderr
    on_pg = run("models", "validate", str(folder), cwd=tmp_path,
                env={"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"})  # the dialect, not a connection
    assert on_pg.returncode == 0, on_pg.stderr
    assert "checked for postgresql (DATABASE_URL)" in on_pg.stdout
    shipped = run("models", "validate", SHIPPED, cwd=tmp_path)
    assert "checked for sqlite (the embedded default, DATABASE_URL unset)" in shipped.stdout


def test_models_validate_refuses_an_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    stderr = failure(run("models", "validate", str(tmp_path / "empty"), cwd=tmp_path))
    assert "no model files (*.yaml, *.yml) in" in stderr


def test_models_validate_reports_every_error_at_once_and_yaml_errors_name_their_file(
    write_models: Callable[..., Path], tmp_path: Path
) -> None:
    folder = write_models({name: textwrap.dedent(body) for name, body in BROKEN_FILES.items()})
    done = run("models", "validate", str(folder), cwd=tmp_path)
    assert done.returncode == 1
    assert "3 error(s)" in done.stderr, done.stderr
    assert "<unicode string>" not in done.stderr and f'in "{folder / "a_syntax.yaml"}"' in done.stderr
    assert "unknown type 'Bogus'" in done.stderr and "no model has table 'nowhere'" in done.stderr
