"""The `timber-tasks` command as a user runs it: a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from .conftest import ROOT

SHIPPED = str(ROOT / "model_configs")


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "timber_tasks.cli", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=120)


def test_models_validate_accepts_the_shipped_registry(tmp_path: Path) -> None:
    result = run("models", "validate", SHIPPED, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "ok: 12 models in 8 files" in result.stdout


def test_models_validate_names_each_problem_and_exits_1(tmp_path: Path,
                                                        write_models: Callable[..., Path]) -> None:
    folder = write_models({"bad.yaml": 'version: "1"\nmodels: [{name: M, table_name: m, columns: '
                                       '[{name: id, type: Integr, primary_key: true}]}]'})
    result = run("models", "validate", str(folder), cwd=tmp_path)
    assert result.returncode == 1
    assert "bad.yaml" in result.stderr and "'M'" in result.stderr and "unknown type 'Integr'" in result.stderr
    assert "Traceback" not in result.stderr


def test_models_list_shows_tables_apps_and_features(tmp_path: Path) -> None:
    result = run("models", "list", "--models", SHIPPED, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "TradingSession" in result.stdout and "canopy" in result.stdout
    assert "encryption" in result.stdout


def test_db_revision_then_upgrade_builds_the_schema(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/cli.db", "TIMBER_MODEL_CONFIG_DIRS": SHIPPED,
           "TIMBER_MIGRATIONS_DIR": str(tmp_path / "migrations")}
    assert run("db", "check", cwd=tmp_path, env=env).returncode == 1
    revision = run("db", "revision", "-m", "initial", cwd=tmp_path, env=env)
    assert revision.returncode == 0 and "wrote" in revision.stdout, revision.stderr
    upgrade = run("db", "upgrade", cwd=tmp_path, env=env)
    assert upgrade.returncode == 0 and "database at revision" in upgrade.stdout, upgrade.stderr
    check = run("db", "check", cwd=tmp_path, env=env)
    assert check.returncode == 0 and "matches" in check.stdout
    assert '"ok": true' in run("db", "health", cwd=tmp_path, env=env).stdout
