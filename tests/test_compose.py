"""docker-compose.yml: its shape, its secrets, and every service's command run here for real.

There is no Docker engine on these machines, so the file is parsed with PyYAML and each app
service's command (and health check) runs locally against the machine's PostgreSQL and Redis.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.fernet import Fernet

from timber_tasks.settings import ENV_NAMES

from .conftest import ROOT, require_server
from .platforms import TEST_REDIS, free_port, http_get, reset_brokers, wait_for

COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
POOLS = sorted(p.stem for p in (ROOT / "workers").glob("*.yaml"))
SERVERS = {"postgres", "redis", "qdrant"}
APP_SERVICES = sorted([f"worker-{pool}" for pool in POOLS] + ["beat", "flower"])
# Variables that carry credentials or point at credentialed servers: only ever from .env.
SECRET_NAMES = {"DATABASE_URL", "BROKER_URL", "RESULT_BACKEND_URL", "REDIS_URL", "QDRANT_URL",
                "TIMBER_ENCRYPTION_KEYS", "FLOWER_BASIC_AUTH", "POSTGRES_PASSWORD"}
# What the code reads: Settings' variables, Flower's login, and the postgres image's own.
READ_BY_CODE = set(ENV_NAMES.values()) | {"FLOWER_BASIC_AUTH", "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}
BIN = Path(sys.executable).parent  # the venv's console scripts: timber-tasks, celery, python
READY_TIMEOUT = 60.0
# ${NAME}, ${NAME:-default}, ${NAME:?error}; `$${...}` is an escaped literal `$`, not a reference.
INTERPOLATION = re.compile(r"(?<!\$)\$\{(\w+)(?::?[-?][^}]*)?\}")


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def service(name: str) -> dict[str, Any]:
    services: dict[str, Any] = compose()["services"]
    return services[name]


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f".env.example: {line!r} is not NAME=value"
            values[name.strip()] = value.strip()
    return values


def unescape(command: str) -> str:
    """What Compose hands the container: `$$` in the file is a literal `$`."""
    return command.replace("$$", "$")


def healthcheck_argv(name: str) -> list[str]:
    test = service(name)["healthcheck"]["test"]
    assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL"), f"{name}: healthcheck test {test!r}"
    if test[0] == "CMD-SHELL":
        assert len(test) == 2
        return ["sh", "-c", unescape(test[1])]
    return [unescape(part) for part in test[1:]]


def local_env(**extra: str) -> dict[str, str]:
    """The test's environment with the venv's scripts first on PATH and the worktree's code imported."""
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": str(ROOT),
            **extra}




# --- the file itself --------------------------------------------------------------------------


def test_the_compose_file_has_exactly_the_servers_one_worker_per_pool_beat_and_flower() -> None:
    assert POOLS, "workers/ holds no pool"
    assert set(compose()["services"]) == SERVERS | set(APP_SERVICES)


def test_the_servers_use_the_pinned_official_images() -> None:
    assert service("postgres")["image"] == "postgres:15"
    assert service("redis")["image"] == "redis:7"
    assert service("qdrant")["image"].startswith("qdrant/qdrant:v1.")


def test_every_worker_service_runs_the_pool_its_name_says() -> None:
    for pool in POOLS:
        assert service(f"worker-{pool}")["command"] == ["timber-tasks", "worker", "--pool", pool]
    assert service("beat")["command"] == ["timber-tasks", "beat"]
    assert service("flower")["command"] == ["timber-tasks", "flower", "--address", "0.0.0.0", "--port", "5555"]


def seconds(duration: str) -> int:
    match = re.fullmatch(r"(\d+)([sm])", duration)
    assert match, f"duration {duration!r}: write it as 30s or 5m"
    return int(match[1]) * (60 if match[2] == "m" else 1)


def test_a_solo_pool_stays_healthy_through_a_job_that_runs_to_its_time_limit() -> None:
    # A solo worker runs the job in its main process, so it answers no ping until the job ends.
    from timber_tasks.pools import load_pools
    from timber_tasks.settings import Settings

    solo = [p for p in load_pools(ROOT / "workers") if p.pool == "solo"]
    for pool in solo:
        check = service(f"worker-{pool.name}")["healthcheck"]
        limit = pool.time_limit or Settings().task_time_limit
        assert seconds(check["interval"]) * check["retries"] > limit, pool.name


def test_every_app_service_shares_one_image_reads_the_env_file_and_waits_for_healthy_servers() -> None:
    for name in APP_SERVICES:
        spec = service(name)
        assert spec["image"] == "timber-tasks:latest" and spec["build"] == ".", name
        assert spec["env_file"] == ".env", name
        conditions = {server: dep["condition"] for server, dep in spec["depends_on"].items()}
        assert conditions == {"postgres": "service_healthy", "redis": "service_healthy",
                              "qdrant": "service_healthy"}, name
    assert (ROOT / "Dockerfile").is_file()
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "torch==2.13.0" in dockerfile and "download.pytorch.org/whl/cpu" in dockerfile
    assert dockerfile.index("torch==2.13.0") < dockerfile.index("pip install .")


def test_every_service_has_a_healthcheck_and_data_lives_in_volumes() -> None:
    for name, spec in compose()["services"].items():
        check = spec.get("healthcheck")
        assert check and check["test"][0] in ("CMD", "CMD-SHELL") and check.get("interval"), name
    assert "postgres-data:/var/lib/postgresql/data" in service("postgres")["volumes"]
    assert "qdrant-data:/qdrant/storage" in service("qdrant")["volumes"]
    assert {"postgres-data", "qdrant-data"} <= set(compose()["volumes"])
    assert service("flower")["ports"] == ["5555:5555"]


def test_no_secret_is_written_in_the_compose_file() -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    for name, spec in compose()["services"].items():
        environment = spec.get("environment") or {}
        assert isinstance(environment, dict), f"{name}: use a mapping for environment"
        for key, value in environment.items():
            if key in SECRET_NAMES:
                assert INTERPOLATION.fullmatch(str(value)), f"{name}: {key} is written inline, not taken from .env"
        assert "--basic-auth" not in " ".join(map(str, spec.get("command") or [])), name
    assert not re.search(r"://[^/\s:@]+:[^/\s@$]+@", text), "a URL with a password is written inline"
    assert not re.search(r"[A-Za-z0-9_-]{43}=", text), "something shaped like a Fernet key is written inline"
    for name, value in env_example().items():
        if name in SECRET_NAMES and "change-me" in value:
            assert value not in text, f"{name}'s placeholder value is copied into the compose file"


def test_every_variable_of_env_example_is_one_the_code_reads_and_every_secret_is_there() -> None:
    defined = env_example()
    assert set(defined) <= READ_BY_CODE, f"not read by anything: {sorted(set(defined) - READ_BY_CODE)}"
    assert set(defined) >= SECRET_NAMES
    # Placeholders, not secrets: the key placeholder is no Fernet key, so nothing starts with it.
    with pytest.raises(ValueError):
        Fernet(defined["TIMBER_ENCRYPTION_KEYS"].split(",")[0])
    assert "change-me" in defined["POSTGRES_PASSWORD"] and "change-me" in defined["FLOWER_BASIC_AUTH"]
    assert f":{defined['POSTGRES_PASSWORD']}@postgres:" in defined["DATABASE_URL"]


def test_every_variable_the_compose_file_interpolates_is_defined_in_env_example() -> None:
    used = set(INTERPOLATION.findall(yaml.safe_dump(compose())))  # values only, not comments
    assert used, "the postgres service should take its password from .env by reference"
    assert used <= set(env_example())


# --- the servers' health checks, run against this machine's servers ---------------------------


def test_the_postgres_healthcheck_passes_against_the_local_server() -> None:
    require_server(5432, "PostgreSQL")
    env = {k: v for k, v in local_env().items() if not k.startswith("POSTGRES_")}
    done = subprocess.run(healthcheck_argv("postgres"), env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "accepting connections" in done.stdout


def test_the_redis_healthcheck_passes_against_the_local_server() -> None:
    require_server(6379, "Redis")
    done = subprocess.run(healthcheck_argv("redis"), env=local_env(), capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr


class _Readyz(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        code = self.status if self.path == "/readyz" else 404
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"all shards are ready" if code == 200 else b"not ready")

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def readyz_server() -> Iterator[tuple[ThreadingHTTPServer, type[_Readyz]]]:
    handler = type("Readyz", (_Readyz,), {"status": 200})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_the_qdrant_healthcheck_asks_readyz_and_passes_only_on_200(
    readyz_server: tuple[ThreadingHTTPServer, type[_Readyz]],
) -> None:
    # No Qdrant binary exists here: the check's own bash runs against a stand-in that answers
    # /readyz like Qdrant does, with 200 and then with 503 (shards not ready yet).
    server, handler = readyz_server
    argv = healthcheck_argv("qdrant")
    assert argv[:2] == ["bash", "-c"] and "/dev/tcp/127.0.0.1/6333" in argv[2] and "GET /readyz" in argv[2]
    argv[2] = argv[2].replace("/6333", f"/{server.server_address[1]}")
    assert subprocess.run(argv, capture_output=True, timeout=30).returncode == 0
    handler.status = 503
    assert subprocess.run(argv, capture_output=True, timeout=30).returncode != 0


# --- every app service's command, run locally -----------------------------------------------


class Service:
    """One app service's command started here, with the environment .env would give it."""

    def __init__(self, name: str, env: dict[str, str], log: Path, argv: list[str] | None = None) -> None:
        self.name, self.env, self.log = name, env, log
        self.argv = argv or list(service(name)["command"])
        assert self.argv[0] == "timber-tasks"
        self.argv[0] = str(BIN / "timber-tasks")
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Service:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_log(self, *needles: str) -> None:
        assert self.proc is not None
        proc = self.proc
        wait_for(lambda: all(n in self.output() for n in needles) or proc.poll() is not None,
                 READY_TIMEOUT, f"{self.name} to log {needles}", interval=0.2)
        assert proc.poll() is None, f"{self.name} exited with {proc.returncode}:\n{self.output()}"

    def healthcheck(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(healthcheck_argv(self.name), cwd=ROOT, capture_output=True, text=True,
                              timeout=60, env={**self.env, "HOSTNAME": socket.gethostname()})

    def terminate(self) -> int:
        """SIGTERM to the main process, as `docker stop` sends it to PID 1, then wait.

        Not to the whole group: prefork children killed by the same signal can die holding
        billiard's queue lock, and the main process then hangs in its exit handler.
        """
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
                raise AssertionError(f"{self.name} ignored SIGTERM for 60 s:\n{self.output()}") from None
        return self.proc.returncode

    def __exit__(self, *_: object) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):  # whatever is left of the group
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


@pytest.fixture
def service_env(postgres_url: str, tmp_path: Path) -> dict[str, str]:
    """What .env gives the app services, pointed at this machine's servers (the test's Redis database emptied)."""
    require_server(6379, "Redis")
    reset_brokers("redis")  # jobs another run left there are sealed under its key: no worker here opens them
    return local_env(DATABASE_URL=postgres_url, BROKER_URL=TEST_REDIS, RESULT_BACKEND_URL=TEST_REDIS,
                     TIMBER_DATA_DIR=str(tmp_path / "var"), FLOWER_BASIC_AUTH="test:long-enough-secret")


@pytest.mark.parametrize("pool", POOLS)
def test_each_worker_service_command_starts_a_ready_worker_that_passes_its_healthcheck_and_stops_on_sigterm(
    pool: str, service_env: dict[str, str], tmp_path: Path
) -> None:
    with Service(f"worker-{pool}", service_env, tmp_path / "worker.log") as worker:
        worker.wait_for_log(" ready.")
        assert f"{pool}@{socket.gethostname()}" in worker.output()
        check = worker.healthcheck()
        assert check.returncode == 0, check.stdout + check.stderr
        assert "pong" in check.stdout
        assert worker.terminate() == 0, worker.output()
    assert "Traceback" not in worker.output(), worker.output()


def test_the_beat_service_command_starts_beat_takes_the_redbeat_lock_and_releases_it_on_sigterm(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    import redis
    from redbeat.schedulers import RedBeatConfig

    from timber_tasks.celery_app import make_celery
    from timber_tasks.settings import Settings

    app = make_celery(Settings.load({**service_env, "TIMBER_DATA_DIR": str(tmp_path / "probe")}))
    with warnings.catch_warnings():
        # celery_app sets no redbeat_redis_options, so RedBeat warns that it falls back to
        # broker_transport_options (a DeprecationWarning blamed on its caller): see the report.
        warnings.simplefilter("ignore", DeprecationWarning)
        lock_key = RedBeatConfig(app).lock_key
    app.close()
    with redis.Redis.from_url(TEST_REDIS) as client, Service("beat", service_env, tmp_path / "beat.log") as beat:
        beat.wait_for_log("beat: Starting...", "beat: Acquired lock")
        assert client.exists(lock_key)
        check = beat.healthcheck()
        assert check.returncode == 0, check.stdout + check.stderr
        assert beat.terminate() == 0, beat.output()
        assert "beat: Releasing lock" in beat.output()
        assert not client.exists(lock_key)
    assert "Traceback" not in beat.output(), beat.output()




def test_the_flower_service_command_serves_its_dashboard_and_api_only_with_the_login(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    # A free port instead of 5555, and loopback instead of 0.0.0.0: this is a shared machine.
    port = free_port()
    argv = list(service("flower")["command"])
    argv[argv.index("--port") + 1] = str(port)
    argv[argv.index("--address") + 1] = "127.0.0.1"
    base = f"http://127.0.0.1:{port}"
    with Service("flower", service_env, tmp_path / "flower.log", argv) as flower:
        proc = flower.proc
        assert proc is not None
        wait_for(lambda: http_get(f"{base}/healthcheck")[0] == 200 or proc.poll() is not None,
                 READY_TIMEOUT, "Flower to answer HTTP", interval=0.5)
        assert proc.poll() is None, flower.output()
        assert http_get(f"{base}/", "test:long-enough-secret")[0] == 200
        assert http_get(f"{base}/")[0] == 401
        assert http_get(f"{base}/", "test:wrong")[0] == 401
        assert http_get(f"{base}/api/tasks", "test:long-enough-secret")[0] == 200
        assert http_get(f"{base}/api/tasks")[0] == 401
        healthcheck = healthcheck_argv("flower")
        healthcheck[-1] = healthcheck[-1].replace("127.0.0.1:5555", f"127.0.0.1:{port}")
        check = subprocess.run(healthcheck, env=service_env, capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stderr
        assert flower.terminate() == 0, flower.output()
        assert "shutting down" in flower.output()
    assert "Traceback" not in flower.output(), flower.output()
