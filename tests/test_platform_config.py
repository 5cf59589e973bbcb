"""Platform configuration: beat_schedule.yaml, workers/*.yaml, and the start-up safety checks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from celery.schedules import crontab

from timber_tasks import ConfigError
from timber_tasks.beat import load_schedule
from timber_tasks.celery_app import QUEUES, check_app_config, make_celery
from timber_tasks.pools import find_pool, load_pools
from timber_tasks.settings import Settings

from .conftest import ROOT, require_server
from .platforms import TEST_REDIS, wait_for


@pytest.fixture
def app(tmp_path: Path):  # type: ignore[no-untyped-def]
    app = make_celery(Settings.load(data_dir=tmp_path / "var", beat_schedule_file=tmp_path / "none.yaml"))
    yield app
    app.close()


def test_the_shipped_beat_schedule_loads_with_intervals_and_crontabs(app) -> None:  # type: ignore[no-untyped-def]
    schedule = load_schedule(ROOT / "beat_schedule.yaml", app)
    assert schedule["relay-outbox"]["schedule"] == timedelta(seconds=10)
    assert isinstance(schedule["purge-job-records"]["schedule"], crontab)
    assert all(entry["task"] in app.tasks for entry in schedule.values())


@pytest.mark.parametrize(("body", "message"), [
    ("entries:\n  nightly:\n    task: timber.nope\n    every: 5\n", "entry 'nightly': unknown task 'timber.nope'"),
    ("entries:\n  nightly:\n    task: timber.maintenance.noop\n", "entry 'nightly'.*exactly one of"),
    ("entries:\n  nightly:\n    task: timber.maintenance.noop\n    every: 5\n    crontab: '* * * * *'\n",
     "entry 'nightly'.*exactly one of"),
    ("entries:\n  nightly:\n    task: timber.maintenance.noop\n    crontab: '61 * * * *'\n",
     "entry 'nightly': bad crontab '61"),
    ("entries:\n  nightly:\n    task: timber.maintenance.noop\n    crontab: '5 4 *'\n", "entry 'nightly'.*five fields"),
    ("entries:\n  nightly:\n    task: timber.maintenance.noop\n    every: -1\n",
     "entry 'nightly'.*greater than or equal to 1"),
    ("entries:\n  flood:\n    task: timber.maintenance.relay_outbox\n    every: 0.0001\n",
     "entry 'flood'.*greater than or equal to 1"),
    ("entries:\n  typo:\n    task: timber.maintenance.relay_outbox\n    every: 10\n    kwargs: {nosuch: 1}\n",
     "entry 'typo': task 'timber.maintenance.relay_outbox' does not take these args/kwargs"),
    ("entries:\n  short:\n    task: timber.persistence.persist\n    every: 10\n    args: [1]\n",
     "entry 'short': task 'timber.persistence.persist' does not take these args/kwargs"),
    ("entries:\n  nightly:\n    task: timber.maintenance.noop\n    every: 5\n    options: {queue: x}\n",
     "entry 'nightly'.*queues follow the task name"),
    ("entries: [oops\n", "malformed YAML"),
])
def test_a_wrong_beat_entry_fails_at_load_naming_file_and_entry(app, tmp_path: Path, body: str,  # type: ignore[no-untyped-def]
                                                               message: str) -> None:
    path = tmp_path / "beat.yaml"
    path.write_text(body)
    with pytest.raises(ConfigError, match=message) as info:
        load_schedule(path, app)
    assert str(path) in str(info.value)


def test_every_shipped_worker_pool_loads_and_covers_every_queue() -> None:
    pools = load_pools(ROOT / "workers")
    assert {p.name for p in pools} == {"persistence", "embeddings", "market_data", "gdpr"}
    assert {q for p in pools for q in p.queues} == set(QUEUES)
    argv = find_pool(ROOT / "workers", "persistence").worker_argv()
    assert argv[:3] == ["worker", "-Q", "persistence,maintenance"]
    assert "--prefetch-multiplier" in argv and "--time-limit" in argv


@pytest.mark.parametrize(("body", "message"), [
    ("queues: [nope]\n", "unknown queue"),
    ("queues: [gdpr]\npool: gevent\n", "pool"),
    ("queues: [gdpr]\ntime_limit: 10\nsoft_time_limit: 20\n", "soft_time_limit must be below"),
    ("queues: [gdpr]\nconcurency: 2\n", "concurency"),
])
def test_a_wrong_worker_pool_file_is_refused_naming_it(tmp_path: Path, body: str, message: str) -> None:
    (tmp_path / "broken.yaml").write_text(body)
    with pytest.raises(ConfigError, match=message) as info:
        find_pool(tmp_path, "broken")
    assert "broken.yaml" in str(info.value)
    with pytest.raises(ConfigError, match="no worker pool 'missing'.*pools: broken"):
        find_pool(tmp_path, "missing")


def test_the_start_up_check_refuses_pickle(app) -> None:  # type: ignore[no-untyped-def]
    check_app_config(app)
    app.conf.accept_content = ["json", "pickle"]
    with pytest.raises(ConfigError, match="accept_content.*only \\['timber-json'\\] \\(sealed JSON\\) is safe"):
        check_app_config(app)


def test_the_start_up_check_refuses_a_time_limit_above_the_visibility_timeout(tmp_path: Path) -> None:
    app = make_celery(Settings.load(data_dir=tmp_path, broker_url=TEST_REDIS, result_backend_url=TEST_REDIS,
                                    visibility_timeout=600, task_time_limit=200,
                                    beat_schedule_file=tmp_path / "none.yaml"))
    check_app_config(app, [300])
    with pytest.raises(ConfigError, match=r"visibility_timeout \(600s\) must be larger .* \(900s\)"):
        check_app_config(app, [900])
    app.close()


def test_a_worker_with_unsafe_settings_refuses_to_start(tmp_path: Path) -> None:
    env = {**os.environ, "BROKER_URL": TEST_REDIS, "RESULT_BACKEND_URL": TEST_REDIS, "TIMBER_DATA_DIR": str(tmp_path),
           "TIMBER_VISIBILITY_TIMEOUT": "100", "TIMBER_TASK_TIME_LIMIT": "50", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "timber_tasks.cli", "worker", "--pool", "gdpr"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "visibility_timeout (100s) must be larger than the longest time limit (3000s)" in result.stderr


def test_only_one_beat_schedules_when_redis_is_the_broker(tmp_path: Path, postgres_url: str) -> None:
    require_server(6379, "Redis")
    with redis.Redis.from_url(TEST_REDIS) as client:
        client.flushdb()
        schedule = tmp_path / "beat.yaml"
        schedule.write_text("entries:\n  tick:\n    task: timber.maintenance.noop\n    every: 1\n")
        env = {**os.environ, "BROKER_URL": TEST_REDIS, "RESULT_BACKEND_URL": TEST_REDIS, "DATABASE_URL": postgres_url,
               "TIMBER_DATA_DIR": str(tmp_path), "TIMBER_BEAT_SCHEDULE": str(schedule), "PYTHONPATH": str(ROOT)}
        beats = [subprocess.Popen([sys.executable, "-m", "celery", "-A", "timber_tasks", "beat", "-l", "INFO",
                                   "-s", str(tmp_path / f"s{n}")], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL) for n in range(2)]
        try:
            wait_for(lambda: client.llen("maintenance") >= 2, 60, "beat to send")
            start = client.llen("maintenance")
            time.sleep(6)
            sent = client.llen("maintenance") - start
            lock_holder = client.get("timber:redbeat::lock")
        finally:
            for beat in beats:
                beat.terminate()
                beat.wait(30)
    assert lock_holder is not None  # RedBeat's lock is taken...
    assert 3 <= sent <= 8, f"{sent} ticks in 6 s from two beats: both scheduled"  # ...and only one beat sends


def test_a_named_beat_file_that_is_missing_stops_beat_instead_of_an_empty_schedule(
    app, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    missing = tmp_path / "nonexist.yaml"
    monkeypatch.setenv("TIMBER_BEAT_SCHEDULE", str(missing))
    with pytest.raises(ConfigError, match=r"nonexist\.yaml: no such beat schedule file"):
        load_schedule(missing, app)
