"""Jobs on the embedded default (SQLite, folder broker) beside kombu's stock filesystem transport.

First the transports alone (kombu publish, get + ack; no Celery, no database). Then for each
transport, in interleaved rounds: enqueue rate of no-op jobs from one process, then
enqueue + drain rates of no-op jobs and of single-row persistence jobs, drained by one worker
with 2 prefork processes. Drained means the worker's results are in the SQLite stores (result
backend rows, model rows), counted by this process. The stock transport can crash its worker
(kombu #1551); a crashed round is said, not hidden.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import empty_beat_schedule, report

ROOT = Path(__file__).resolve().parent.parent
JOBS = int(os.environ.get("BENCH_EMBEDDED_JOBS", "500"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
APPS = {"maildir (ours)": "timber_tasks", "kombu filesystem (stock)": "bench.stock_filesystem_app"}
FIGURES = ("enqueue no-op jobs (no consumer)", "drain a no-op backlog", "drain a persist backlog",
           "persist enqueue + drain at once")


def stock_options(settings: Any) -> dict[str, object]:
    """kombu's filesystem transport folders under the data dir (what the embedded default used before)."""
    root = (settings.data_dir / "stock-broker").resolve()
    queue, control = root / "queue", root / "control"
    for folder in (queue, control):
        folder.mkdir(parents=True, exist_ok=True)
    return {"data_folder_in": str(queue), "data_folder_out": str(queue), "control_folder": str(control),
            "store_processed": False, "polling_interval": settings.broker_polling_interval}


class WorkerDied(RuntimeError):
    """Raised when the worker exits while a round waits on it."""


def start_worker(app_module: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", app_module, "worker", "-Q", "persistence,maintenance", "-c", "2",
             "-P", "prefork", "-l", "WARNING", "--without-heartbeat", "--without-mingle", "--without-gossip"],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)


def stop(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        os.kill(worker.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.wait(60)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(worker.pid, signal.SIGKILL)  # a crashed main process leaves its pool behind
    worker.wait(10)


def clear_queues(tmp: Path) -> None:
    """Jobs a crashed round left behind would inflate the next round's counts: drop them."""
    for folder in (tmp / "broker" / "queues", tmp / "stock-broker" / "queue"):
        for path in folder.rglob("*.msg") if folder.exists() else []:
            path.unlink(missing_ok=True)


def wait_until(count: Callable[[], int], target: int, worker: subprocess.Popen[bytes], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while count() < target:
        if worker.poll() is not None:
            raise WorkerDied(f"the worker exited with code {worker.returncode}")
        if time.monotonic() > deadline:
            raise WorkerDied(f"the worker did not finish {target} jobs in {timeout} s")
        time.sleep(0.02)


def first_and_last(count: Callable[[], int], start: int, worker: subprocess.Popen[bytes]) -> float:
    """Jobs per second between the first and the last of JOBS finishing (worker start-up excluded)."""
    wait_until(count, start + 1, worker)
    first = time.perf_counter()
    wait_until(count, start + JOBS, worker)
    return (JOBS - 1) / (time.perf_counter() - first)


def one_round(app: Any, module: str, timber: Any, tmp: Path, rates: dict[str, list[float]]) -> None:
    """Backlogs enqueued with no consumer, drained by a fresh worker; then jobs enqueued while it drains."""
    noop, persist = app.tasks["timber.maintenance.noop"], app.tasks["timber.persistence.persist"]
    results_db, log = tmp / "celery-results.db", tmp / f"worker-{module}.log"

    def finished_noops() -> int:
        if not results_db.exists():
            return 0
        with sqlite3.connect(results_db) as conn:
            try:
                return int(conn.execute("SELECT count(*) FROM celery_taskmeta WHERE status = 'SUCCESS'").fetchone()[0])
            except sqlite3.OperationalError:  # no result written yet: no table
                return 0

    def events() -> int:
        from sqlalchemy import func, select

        with timber.db.session_scope() as session:
            return int(session.scalar(select(func.count()).select_from(timber.get_model("TrackedEvent"))) or 0)

    def persist_jobs(first: int) -> None:
        for n in range(first, first + JOBS):
            persist.delay("TrackedEvent", "create", {"app_name": "grove", "event_type": f"bench-{n}"})

    done, rows = finished_noops(), events()
    started = time.perf_counter()
    for _ in range(JOBS):
        noop.delay()
    rates[FIGURES[0]].append(JOBS / (time.perf_counter() - started))
    persist_jobs(rows)
    worker = start_worker(module, log)
    try:
        rates[FIGURES[1]].append(first_and_last(finished_noops, done, worker))
        rates[FIGURES[2]].append(first_and_last(events, rows, worker))
        started = time.perf_counter()
        persist_jobs(rows + JOBS)  # a producer and a consumer at once: the stock transport's race
        wait_until(events, rows + 2 * JOBS, worker)
        rates[FIGURES[3]].append(JOBS / (time.perf_counter() - started))
    finally:
        stop(worker)


def raw_rates(url: str, options: dict[str, str], messages: int) -> tuple[float, float]:
    """Publish, then get + ack, `messages` messages of 1 KB on one connection; rates per second."""
    import kombu

    queue = kombu.Queue("jobs", kombu.Exchange("jobs"), "jobs")
    got: list[int] = []

    def take(body: Any, message: Any) -> None:
        got.append(1)
        message.ack()

    with kombu.Connection(url, transport_options=options) as conn:
        producer = conn.Producer()
        producer.publish({}, exchange=queue.exchange, routing_key="jobs", declare=[queue])
        started = time.perf_counter()
        for i in range(messages):
            producer.publish({"i": i, "pad": "x" * 1000}, exchange=queue.exchange, routing_key="jobs")
        publish = messages / (time.perf_counter() - started)
        started = time.perf_counter()
        with conn.Consumer([queue], callbacks=[take], prefetch_count=2):
            while len(got) < messages + 1:
                conn.drain_events(timeout=10)
        return publish, messages / (time.perf_counter() - started)


def transport_only(root: Path, rounds: int, messages: int = 2000) -> None:
    """Raw kombu rates, no Celery and no database: the broker alone."""
    import timber_tasks.brokers  # noqa: F401 - registers maildir://

    rates: dict[str, dict[str, list[float]]] = {name: {"publish": [], "get + ack": []} for name in APPS}
    for _ in range(rounds):
        for name in APPS:
            folder = root / f"raw-{APPS[name]}"  # one per transport: kombu's keeps its bindings per process
            if name.startswith("maildir"):
                url, options = "maildir://", {"data_folder": str(folder)}
            else:
                url = "filesystem://"
                options = {"data_folder_in": str(folder / "q"), "data_folder_out": str(folder / "q"),
                           "control_folder": str(folder / "c")}
                for sub in ("q", "c"):
                    (folder / sub).mkdir(parents=True, exist_ok=True)
            publish, take = raw_rates(url, options, messages)
            rates[name]["publish"].append(publish)
            rates[name]["get + ack"].append(take)
    for figure in ("publish", "get + ack"):
        rows = [(f"{name}: {figure}", statistics.median(values[figure]), "msgs/s") for name, values in rates.items()]
        report(f"transport alone, {messages} messages of 1 KB, one process (median of {rounds})", rows,
               baseline=rows[1][0])


def main() -> None:
    from cryptography.fernet import Fernet

    tmp = Path(tempfile.mkdtemp(prefix="timber-bench-embedded-"))
    os.environ.update({"TIMBER_DATA_DIR": str(tmp), "TIMBER_BEAT_SCHEDULE": empty_beat_schedule(tmp),
                       "TIMBER_ENCRYPTION_KEYS": os.environ.get("TIMBER_ENCRYPTION_KEYS")
                       or Fernet.generate_key().decode()})
    for name in ("DATABASE_URL", "BROKER_URL", "RESULT_BACKEND_URL"):
        os.environ.pop(name, None)
    from timber_tasks import runtime
    from timber_tasks.celery_app import make_celery
    from timber_tasks.settings import Settings

    transport_only(tmp, ROUNDS)
    timber = runtime.initialize_timber(create_tables=True)
    apps = {"maildir (ours)": make_celery(Settings.load())}
    stock = apps["kombu filesystem (stock)"] = make_celery(Settings.load(broker_url="filesystem://"))
    stock.conf.broker_transport_options = stock_options(Settings.load())
    rates: dict[str, dict[str, list[float]]] = {name: {f: [] for f in FIGURES} for name in APPS}
    crashes: dict[str, int] = dict.fromkeys(APPS, 0)
    for _ in range(ROUNDS):
        for name, module in APPS.items():
            try:
                one_round(apps[name], module, timber, tmp, rates[name])
            except WorkerDied as exc:
                crashes[name] += 1
                print(f"  {name}: round lost: {exc} (log: {tmp / f'worker-{module}.log'})")
            clear_queues(tmp)
    for figure in FIGURES:
        rows = [(f"{name}: {figure}", statistics.median(values[figure]), "jobs/s")
                for name, values in rates.items() if values[figure]]
        if len(rows) == len(APPS):
            report(f"embedded default, {JOBS} jobs, one worker x 2 processes (median of {ROUNDS} rounds)", rows,
                   baseline=rows[1][0])
        else:
            print(f"\n== {figure}: only {[r[0] for r in rows]} finished a round")
    for name, values in rates.items():
        for figure, runs in values.items():
            print(f"  {name}: {figure}: " + ", ".join(f"{v:,.0f}" for v in runs))
        print(f"  {name}: rounds lost to a worker crash: {crashes[name]} of {ROUNDS}")
    for app in apps.values():
        app.close()
    timber.close()


if __name__ == "__main__":
    main()
