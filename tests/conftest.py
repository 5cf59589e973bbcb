"""Shared fixtures: one per real backend, so contract tests run against each of them."""

from __future__ import annotations

import os
import socket
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, text

from timber_tasks import runtime
from timber_tasks.models import types, validators

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
# Three Redis databases from TEST_REDIS_DB_BASE (default 0): base for general use, base + 1 for
# the Celery platforms, base + 2 for the feature tests (cache L2). Two suites on one machine
# (parallel branches) stay apart by choosing different bases; CI runs one suite on 0.
REDIS_DB_BASE = int(os.environ.get("TEST_REDIS_DB_BASE", "0"))
REDIS_URL = f"redis://127.0.0.1:6379/{REDIS_DB_BASE}"
FEATURES_REDIS_DB = REDIS_DB_BASE + 2
FEATURES_REDIS_URL = f"redis://127.0.0.1:6379/{FEATURES_REDIS_DB}"
# One Fernet key for the whole test run: the shipped models encrypt a field, so every
# initialize_timber() needs a key. Tests of key handling set their own.
TEST_ENCRYPTION_KEY = Fernet.generate_key().decode()


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


def require_server(port: int, name: str) -> None:
    """Skip locally when a server is absent; on CI (CI=true) its absence is a failure."""
    if port_open(port):
        return
    if os.environ.get("CI"):
        pytest.fail(f"{name} is not running on port {port}; .ci/run should have started it")
    pytest.skip(f"{name} is not running on port {port}")


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    require_server(5432, "PostgreSQL")
    name = f"timber_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _reset_postgres(url: str) -> None:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs twice: on an SQLite file and on an empty PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'timber.db'}"
    url: str = request.getfixturevalue("postgres_server_url")
    _reset_postgres(url)
    return url


@pytest.fixture
def postgres_url(postgres_server_url: str) -> str:
    _reset_postgres(postgres_server_url)
    return postgres_server_url


@pytest.fixture
def redis_url() -> Iterator[str]:
    """The feature tests' Redis database, emptied before and after the test (FLUSHDB, never FLUSHALL)."""
    require_server(6379, "Redis")
    import redis

    client = redis.Redis.from_url(FEATURES_REDIS_URL)
    assert client.connection_pool.connection_kwargs.get("db") == FEATURES_REDIS_DB, "feature tests own one Redis db"
    client.flushdb()
    yield FEATURES_REDIS_URL
    client.flushdb()
    client.close()


@pytest.fixture
def write_models(tmp_path: Path) -> Callable[..., Path]:
    """write_models({"a.yaml": "...yaml..."}) -> the folder holding them."""
    counter = iter(range(1_000_000))

    def write(files: dict[str, str]) -> Path:
        folder = tmp_path / f"models_{next(counter)}"
        for name, body in files.items():
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(body))
        return folder

    return write


@pytest.fixture(autouse=True)
def _isolated_runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts with no Timber, no custom types or validators, and its own data dir."""
    monkeypatch.setenv("TIMBER_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("TIMBER_MIGRATIONS_DIR", str(tmp_path / "migrations"))
    monkeypatch.setenv("TIMBER_ENCRYPTION_KEYS", TEST_ENCRYPTION_KEY)
    for name in ("DATABASE_URL", "BROKER_URL", "RESULT_BACKEND_URL", "REDIS_URL", "QDRANT_URL",
                 "TIMBER_APP_NAME", "TIMBER_MODEL_CONFIG_DIRS"):
        monkeypatch.delenv(name, raising=False)
    custom_types = dict(types._custom_types)
    custom_validators = dict(validators._custom)
    yield
    runtime.reset()
    types._custom_types.clear()
    types._custom_types.update(custom_types)
    validators._custom.clear()
    validators._custom.update(custom_validators)


@pytest.fixture(params=["embedded", "redis", "rabbitmq"])
def platform(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:
    """The same job tests on the embedded default, PostgreSQL + Redis, and PostgreSQL + RabbitMQ."""
    from .platforms import open_platform

    kind = request.param
    postgres = None
    if kind != "embedded":
        require_server(6379, "Redis")
        if kind == "rabbitmq" and not port_open(5672):
            pytest.skip("RabbitMQ is not running (its tests run where it is)")
        postgres = request.getfixturevalue("postgres_url")
    yield from open_platform(kind, tmp_path, postgres)
