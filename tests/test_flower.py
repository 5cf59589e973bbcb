"""`timber-tasks flower` against real workers: a finished task read back through Flower's API, behind a login."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert

from .conftest import ROOT
from .gdpr_helpers import seed_subject
from .platforms import Platform, free_port, http_get, wait_for

LOGIN = "test:long-enough-secret"
PERSIST = "timber.persistence.persist"
EXPORT_ROWS = 200_000  # an export of 10 s or more: many progress reports, 0.5 s apart, for Flower to show






def start_flower(platform: Platform) -> str:
    """Flower on a free loopback port; returns its base URL once it answers HTTP."""
    port = free_port()
    proc = platform.spawn([sys.executable, "-m", "timber_tasks.cli", "flower", "--port", str(port)], "flower",
                          {"FLOWER_BASIC_AUTH": LOGIN})
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: http_get(f"{base}/healthcheck")[0] == 200 or proc.poll() is not None, 60, "Flower to answer HTTP",
             interval=0.5)
    assert proc.poll() is None, platform.log_of(proc)
    return base


def task_info(base: str, task_id: str) -> dict[str, Any] | None:
    status, body = http_get(f"{base}/api/task/info/{task_id}", LOGIN)
    if status == 404:  # Flower has not seen an event of this task yet
        return None
    assert status == 200, (status, body)
    info: dict[str, Any] = json.loads(body)
    return info


def workers_seen(base: str) -> dict[str, Any]:
    """Flower's view of the workers after broadcasting `inspect` to them."""
    status, body = http_get(f"{base}/api/workers?refresh=1", LOGIN)
    assert status == 200, (status, body)
    workers: dict[str, Any] = json.loads(body)
    return workers


def wait_until_flower_sees_events(platform: Platform, base: str) -> None:
    """Flower knows only the tasks whose events it received: wait until it has seen one (a no-op)."""
    noop = platform.task("timber.maintenance.noop")
    probes: list[str] = []

    def flower_has_events() -> bool:
        probes.append(noop.delay().id)
        return any(task_info(base, probe) is not None for probe in probes)

    wait_for(flower_has_events, 60, "Flower to receive task events", interval=1)


@pytest.mark.parametrize("platform", ["embedded", "redis"], indirect=True)
def test_flower_reads_a_finished_task_back_through_its_api_and_refuses_it_without_the_login(
    platform: Platform,
) -> None:
    platform.start_worker()
    base = start_flower(platform)
    wait_until_flower_sees_events(platform, base)
    result = platform.task(PERSIST).delay("User", "create", {"email": "a@b.co", "username": "abc"})
    noop = platform.task("timber.maintenance.noop")
    busy = [noop.delay() for _ in range(600 if platform.name == "embedded" else 3000)]  # Redis drains fast
    # `refresh=1` makes Flower broadcast `inspect` to the workers while they run jobs.
    workers = wait_for(lambda: workers_seen(base), 60, "Flower's inspect broadcast answered", interval=0.5)
    assert not busy[-1].ready(), "the backlog was done before the broadcast answered: nothing ran beside it"
    assert any(name.startswith("w0@") and info.get("stats") for name, info in workers.items()), workers
    record = result.get(timeout=60)["record"]
    assert all(job.get(timeout=120) is None for job in busy)
    info = wait_for(lambda: (i := task_info(base, result.id)) and i["state"] == "SUCCESS" and i,
                    60, "Flower to report the task finished", interval=0.5)
    assert info["uuid"] == result.id and info["name"] == PERSIST
    assert info["worker"].startswith("w0@")
    # Arguments are sealed (timber-json): Flower shows that, never the values; results hold no encrypted field.
    assert info["args"] == "<sealed>" and record["id"] in info["result"]
    assert info["received"] and info["started"] and info["succeeded"]

    status, body = http_get(f"{base}/api/task/info/{result.id}")
    assert status == 401 and b"a@b.co" not in body
    assert http_get(f"{base}/api/task/info/{result.id}", "test:wrong-password")[0] == 401
    assert http_get(f"{base}/api/tasks")[0] == 401
    assert http_get(f"{base}/")[0] == 401


def test_flower_without_flower_basic_auth_exits_non_zero_naming_the_variable(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "FLOWER_BASIC_AUTH"}
    env["PYTHONPATH"] = str(ROOT)
    for extra in ([], ["--basic-auth", "no-colon"]):
        done = subprocess.run([sys.executable, "-m", "timber_tasks.cli", "flower", "--port", str(free_port()),
                               *extra], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode != 0, done.stdout + done.stderr
        assert "FLOWER_BASIC_AUTH" in done.stderr
    assert not (tmp_path / "var" / "broker").exists()  # refused before it touched a broker


@pytest.mark.parametrize("platform", ["redis"], indirect=True)
def test_flower_shows_how_far_a_running_gdpr_export_is_and_none_of_the_exported_data(
        platform: Platform, tmp_path: Path) -> None:
    user = "subject-progress"
    seed_subject(platform.timber, user)
    Event = platform.timber.get_model("TrackedEvent")
    first = 10_000_000
    with platform.timber.db.session_scope() as session:  # enough rows for a long export
        session.execute(insert(Event), [{"id": first + n, "user_id": user, "app_name": "grove",
                                         "event_type": "login", "properties": {"ip": "10.9.8.7"}}
                                        for n in range(EXPORT_ROWS)])
    platform.start_worker(queues="gdpr,maintenance", concurrency=1)
    base = start_flower(platform)
    wait_until_flower_sees_events(platform, base)

    job = platform.task("timber.gdpr.export").delay(user, str(tmp_path / "export.zip"), False, "test")
    seen = wait_for(lambda: (i := task_info(base, job.id)) and i["state"] == "PROGRESS" and i, 120,
                    "Flower to show the export in progress", interval=0.05)
    assert re.fullmatch(r"exporting \w+: [\d,]+ of [\d,]+ rows", seen["result"]), seen["result"]
    assert job.get(timeout=120)["counts"]["TrackedEvent"] == EXPORT_ROWS + 3
    done = wait_for(lambda: (i := task_info(base, job.id)) and i["state"] == "SUCCESS" and i, 60,
                    "Flower to show the export finished", interval=0.5)
    assert done["args"] == "<sealed>"  # the subject's id travels sealed, as every job's arguments
    for text in (seen["result"], done["result"]):  # counts and model names, never a person's data
        assert "10.9.8.7" not in text and "@example.com" not in text
