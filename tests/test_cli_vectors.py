"""`timber-tasks vectors reindex | search | status` as a user runs them, on the embedded default."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from timber_tasks import initialize_timber

from .embedding_helpers import add_notes, add_users
from .test_cli import SHIPPED, run


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A data dir with the four sample notes written and nothing embedded yet."""
    database = f"sqlite:///{tmp_path / 'app.db'}"
    timber = initialize_timber(model_config_dirs=[SHIPPED], database_url=database)
    add_users(timber, "u1")
    add_notes(timber)
    timber.close()
    found = {k: v for k, v in os.environ.items()
             if k not in ("BROKER_URL", "RESULT_BACKEND_URL", "REDIS_URL", "QDRANT_URL", "TIMBER_BEAT_SCHEDULE")}
    return {**found, "DATABASE_URL": database, "TIMBER_DATA_DIR": str(tmp_path / "var"),
            "TIMBER_MODEL_CONFIG_DIRS": SHIPPED, "TIMBER_ENCRYPTION_KEYS": Fernet.generate_key().decode()}


def test_reindex_then_search_then_status(tmp_path: Path, env: dict[str, str]) -> None:
    first = run("vectors", "reindex", "StockResearchSession", cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr
    assert ("StockResearchSession -> collection stock_research_sessions: 4 embedded, 0 unchanged, 0 payload-only, "
            "0 removed") in first.stdout
    again = run("vectors", "reindex", "StockResearchSession", cwd=tmp_path, env=env)
    assert "0 embedded, 4 unchanged, 0 payload-only, 0 removed" in again.stdout, again.stdout + again.stderr
    found = run("vectors", "search", "StockResearchSession", "oil supply", "--limit", "2", cwd=tmp_path, env=env)
    assert found.returncode == 0, found.stderr
    lines = [line for line in found.stdout.splitlines() if "r-" in line]
    assert len(lines) == 2 and "r-oil" in lines[0] and "symbol=XOM" in lines[0], found.stdout
    only = run("vectors", "search", "StockResearchSession", "oil supply", "--filter", "symbol=AAPL", cwd=tmp_path,
               env=env)
    assert [line for line in only.stdout.splitlines() if "r-" in line] == [
        line for line in only.stdout.splitlines() if "r-chips" in line] and "r-chips" in only.stdout, only.stdout
    status = run("vectors", "status", cwd=tmp_path, env=env)
    assert status.returncode == 0, status.stderr
    rows = [line.rstrip(" │|") for line in status.stdout.splitlines() if "StockResearchSession" in line]
    assert len(rows) == 1 and rows[0].endswith(" 4"), status.stdout  # its point count


def test_vectors_commands_refuse_bad_input_in_one_line(tmp_path: Path, env: dict[str, str]) -> None:
    for args, message, lines in (
            (("search", "Notification", "x"), "Notification: has no vector_search block enabled", 2),
            (("reindex", "NoSuchModel"), "NoSuchModel", 2),
            # an option's bad value: click's usage message, the option named
            (("search", "StockResearchSession", "x", "--filter", "symbol"), "'symbol' is not field=value", 5)):
        done = run("vectors", *args, cwd=tmp_path, env=env)
        assert done.returncode != 0 and message in done.stderr, (args, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) <= lines, done.stderr
