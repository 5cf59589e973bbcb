"""Expected failures of any command: one or two lines on what is wrong and what to do, exit 1, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from timber_tasks import initialize_timber
from timber_tasks.jobs import dead_letters

from .conftest import PG_ADMIN_URL, require_server
from .platforms import free_port
from .test_cli import SHIPPED, run


def failure(result: object) -> str:
    """The stderr of a run that failed as a user should see it: exit 1, at most two lines, no traceback."""
    returncode, stderr = result.returncode, result.stderr  # type: ignore[attr-defined]
    assert returncode == 1, stderr
    assert "Traceback" not in stderr and stderr.startswith("error: "), stderr
    assert len(stderr.strip().splitlines()) <= 2, stderr
    return str(stderr)


def test_a_database_server_that_is_down_says_so_and_what_to_check(tmp_path: Path) -> None:
    down = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    env = {"DATABASE_URL": down, "TIMBER_MODEL_CONFIG_DIRS": SHIPPED}
    stderr = failure(run("dlq", "list", cwd=tmp_path, env=env))
    assert "cannot reach the database" in stderr and "Connection refused" in stderr and "DATABASE_URL" in stderr


def test_a_broker_that_is_down_says_so_and_what_to_check(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/x.db"
    timber = initialize_timber(model_config_dirs=[SHIPPED], database_url=url, create_tables=True)
    letter = dead_letters.record(timber.db, task_id="t1", task_name="timber.maintenance.noop", args=[], kwargs={},
                                 error=ValueError("boom"), traceback=None, attempts=1)
    timber.close()
    env = {"BROKER_URL": f"amqp://guest:guest@127.0.0.1:{free_port()}//", "TIMBER_MODEL_CONFIG_DIRS": SHIPPED,
           "DATABASE_URL": url, "TIMBER_DATA_DIR": str(tmp_path / "var")}
    stderr = failure(run("dlq", "retry", str(letter), cwd=tmp_path, env=env))
    assert "cannot reach the broker" in stderr and "BROKER_URL" in stderr


@pytest.mark.parametrize("url", ["not a url", "mysql://user@host/db"])
def test_a_bad_database_url_names_the_problem_and_a_good_url(tmp_path: Path, url: str) -> None:
    stderr = failure(run("dlq", "list", cwd=tmp_path, env={"DATABASE_URL": url, "TIMBER_MODEL_CONFIG_DIRS": SHIPPED}))
    assert "URL" in stderr or "not installed" in stderr


def test_a_missing_encryption_key_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TIMBER_ENCRYPTION_KEYS")
    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/x.db", "TIMBER_MODEL_CONFIG_DIRS": SHIPPED}
    assert "TIMBER_ENCRYPTION_KEYS" in failure(run("dlq", "show", "1", cwd=tmp_path, env=env))


def test_a_bad_setting_and_a_bad_file_are_named(tmp_path: Path) -> None:
    env = {"TIMBER_TASK_TIME_LIMIT": "soon", "TIMBER_MODEL_CONFIG_DIRS": SHIPPED,
           "DATABASE_URL": f"sqlite:///{tmp_path}/x.db"}
    assert "TIMBER_TASK_TIME_LIMIT" in failure(run("dlq", "list", cwd=tmp_path, env=env))
    missing = tmp_path / "no-such-folder"
    assert str(missing) in failure(run("models", "list", "--models", str(missing), cwd=tmp_path))


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    env = {"DATABASE_URL": "not a url", "TIMBER_MODEL_CONFIG_DIRS": SHIPPED}
    assert "Traceback" in run("--debug", "dlq", "list", cwd=tmp_path, env=env).stderr
    assert "Traceback" in run("dlq", "list", cwd=tmp_path, env={**env, "TIMBER_DEBUG": "1"}).stderr


def test_a_bare_postgresql_url_works_with_the_shipped_driver(tmp_path: Path) -> None:
    require_server(5432, "PostgreSQL")
    bare = PG_ADMIN_URL.replace("postgresql+psycopg2://", "postgresql://")
    for url in (bare, bare.replace("postgresql://", "postgres://")):
        result = run("db", "health", cwd=tmp_path, env={"DATABASE_URL": url, "TIMBER_MODEL_CONFIG_DIRS": SHIPPED})
        assert result.returncode == 0, result.stderr


def test_a_bare_postgresql_result_backend_url_uses_the_shipped_driver() -> None:
    from timber_tasks.settings import Settings

    settings = Settings.load(result_backend_url="db+postgresql://postgres@127.0.0.1/x")
    assert settings.resolved_result_backend_url == "db+postgresql+psycopg2://postgres@127.0.0.1/x"
    assert Settings.load(result_backend_url="redis://h/1").resolved_result_backend_url == "redis://h/1"


def test_a_worker_that_dies_of_an_error_exits_non_zero_as_celery_does(tmp_path: Path) -> None:
    """`timber-tasks worker` used to exit 0 after Celery's "Unrecoverable error": no supervisor restarted it."""
    (tmp_path / "workers").symlink_to(Path(SHIPPED).parent / "workers")
    env = {"RESULT_BACKEND_URL": "garbage", "TIMBER_MODEL_CONFIG_DIRS": SHIPPED,
           "TIMBER_DATA_DIR": str(tmp_path / "var"), "TIMBER_WORKERS_DIR": str(tmp_path / "workers")}
    result = run("worker", "--pool", "persistence", cwd=tmp_path, env=env)
    assert result.returncode == 1 and "garbage" in result.stdout + result.stderr, result.stderr[-2000:]
