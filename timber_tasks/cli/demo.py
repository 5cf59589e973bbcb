"""`timber-tasks demo`: the README's run command on the embedded default."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from timber_tasks.cli import gdpr, market, vectors
from timber_tasks.cli.common import AppName, ConfigDirs, DatabaseUrl, console, debugging, err_console, reported_errors
from timber_tasks.cli.watch import WatchedWorker

if TYPE_CHECKING:
    from timber_tasks.settings import Settings

DEV_KEY_FILE = "dev-encryption.key"


def development_key(settings: Settings) -> str:
    """The local development key under the data dir, made on first use.

    Only this demo path does it, so `make run` works on a fresh machine; the library
    itself refuses encrypted models without TIMBER_ENCRYPTION_KEYS.
    """
    from timber_tasks.features.encryption import generate_key

    path = Path(settings.data_dir) / DEV_KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(generate_key() + "\n")
    err_console.print(
        f"[bold yellow]WARNING: TIMBER_ENCRYPTION_KEYS is not set; using the local DEVELOPMENT key in "
        f"{path.resolve()}. Never use it in production: set TIMBER_ENCRYPTION_KEYS "
        "(`timber-tasks keys generate`).[/bold yellow]", highlight=False)
    return path.read_text().strip()


Budget = Annotated[float, typer.Option("--budget", help="Seconds the whole demo may take before it gives up.")]
EXPECTED_FAILURE = "demo-bad-email"  # the sample job meant to fail (an invalid email), to show a dead letter


def demo(database_url: DatabaseUrl = None, dirs: ConfigDirs = None, app_name: AppName = None,
         budget: Budget = 300) -> None:
    """Start a worker and beat, run sample persistence jobs, show their results, and stop cleanly."""
    from timber_tasks.runtime import initialize_timber
    from timber_tasks.settings import Settings

    with reported_errors():
        settings = Settings.load(app_name=app_name)
        if not settings.encryption_keys:  # the worker and beat inherit it through the environment
            os.environ["TIMBER_ENCRYPTION_KEYS"] = development_key(settings)
        timber = initialize_timber(app_name=app_name, model_config_dirs=list(dirs) if dirs else None,
                                   database_url=database_url)
    console.print(f"Timber for app [bold]{timber.app_name}[/bold] on {timber.db!r}: "
                  f"{len(timber.registry)} models ({', '.join(timber.registry.names())})")
    from timber_tasks.celery_app import QUEUES, app
    from timber_tasks.market_data.providers.base import PROVIDER_ENV

    # A `kill` of the demo stops its worker and beat too (Python's default SIGTERM skips `finally`).
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    logs = Path(settings.data_dir).resolve()
    # Beat's market-data entries read the SAMPLE files, never the network, while the demo runs.
    os.environ.setdefault(PROVIDER_ENV, "file")
    processes = [
        _spawn(["worker", "-Q", ",".join(QUEUES), "-c", "2", "-n", "demo@%h", "-E"], logs / "demo-worker.log"),
        _spawn(["beat", "-s", str(logs / "demo-beat-schedule")], logs / "demo-beat.log"),
    ]
    worker = WatchedWorker(processes[0], logs / "demo-worker.log", budget)
    try:
        with _step("starting the worker", worker):
            worker.wait_until(lambda: app.control.ping(timeout=1.0), "the worker to answer a ping")  # fanout works
        console.print(f"worker and beat running on {app.conf.broker_url} (logs in {logs})")
        with _step("the sample persistence jobs", worker):
            rows = _run_sample_jobs(app, worker)
        _show(rows)
        with _step("the market-data jobs", worker):
            market.demo_step(app, timber, worker.wait_until)
        with _step("the embedding jobs and a search", worker):
            vectors.demo_step(app, timber, worker.wait_until)
        _show_state(timber)
        with _step("the GDPR export and erasure", worker):  # last: erases the sample user the jobs above wrote
            gdpr.demo_step(app, timber, worker.wait_until)
        failed = [f"{key} ({result})" for key, _, state, result in rows
                  if key != EXPECTED_FAILURE and "done" not in state]
        if failed:  # every job finished (wait_until saw to that); these failed, and are in the dead-letter table
            err_console.print(f"[red]error:[/red] sample job(s) failed: {'; '.join(failed)}; "
                              f"see `timber-tasks dlq list` and {worker.log}", highlight=False)
            raise typer.Exit(1)
    finally:
        _stop(processes)


@contextlib.contextmanager
def _step(name: str, worker: WatchedWorker) -> Iterator[None]:
    """An unexpected error in a demo step: one line naming the step and the worker's log, exit 1."""
    try:
        yield
    except (typer.Exit, KeyboardInterrupt):
        raise
    except Exception as exc:
        if debugging():
            raise
        first = (str(exc).strip().splitlines() or [""])[0]
        err_console.print(f"[red]error:[/red] the demo failed in {name}: {type(exc).__name__}: {first} "
                          f"(worker log: {worker.log}; --debug shows the traceback)", highlight=False)
        raise typer.Exit(1) from None


def _stop(processes: list[subprocess.Popen[bytes]], grace: float = 60) -> None:
    """SIGTERM (warm shutdown: running jobs finish); a process still there after `grace` s is killed, and said."""
    for proc in processes:
        proc.terminate()
    stuck = []
    for name, proc in zip(("the worker", "beat"), processes, strict=False):
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            stuck.append(name)
    if stuck:
        err_console.print(f"[red]error:[/red] {' and '.join(stuck)} did not stop within {grace:g} s of SIGTERM and "
                          "was killed", highlight=False)
        raise typer.Exit(1)
    console.print("worker and beat stopped")


SAMPLE_JOBS: list[tuple[str, str, str, Any]] = [
    # Not the README's Ada: a reader who ran the app snippet still gets a clean demo.
    ("demo-user", "User", "create", {"id": "demo-user", "email": "demo-user@example.com", "username": "demo_user"}),
    ("demo-user", "User", "create", {"id": "demo-user", "email": "demo-user@example.com", "username": "demo_user"}),
    ("demo-canopy-session", "Session", "create",
     {"id": "demo-canopy", "user_id": "demo-user", "session_type": "trading", "data": {"strategy": "momentum"}}),
    ("demo-grove-session", "Session", "create",
     {"id": "demo-grove", "user_id": "demo-user", "session_type": "research"}),
    ("demo-prices", "OhlcvPrice", "upsert",
     [{"symbol": "AAPL", "interval": "1d", "ts": f"2024-05-0{d}T00:00:00", "open": "180.1", "high": "182.5",
       "low": "179.2", "close": "181.7", "volume": 50_000_000 + d} for d in range(1, 6)]),
    ("demo-notification", "Notification", "create",
     {"id": "demo-note", "user_id": "demo-user", "app_name": "grove", "notification_type": "research_complete",
      "title": "Your AAPL analysis is ready"}),
    ("demo-bad-email", "User", "create", {"email": "not-an-email", "username": "bob"}),
]


def _spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "celery", "-A", "timber_tasks", *argv, "-l", "INFO"],
                                stdout=out, stderr=subprocess.STDOUT)


def _stop_on_sigterm(signum: int, frame: Any) -> None:
    err_console.print("[red]error:[/red] the demo was terminated (SIGTERM); stopping its worker and beat")
    raise SystemExit(128 + signum)


def _run_sample_jobs(app: Any, worker: WatchedWorker) -> list[tuple[str, str, str, str]]:
    persist = app.tasks["timber.persistence.persist"]
    # Keys of this run: the last run's GDPR step erased the sample user, and the keys it had used stay
    # spent (an erased person's old jobs, redelivered, must not bring them back), so each run is new.
    run = uuid.uuid4().hex[:6]
    sent = [(key, model, op, persist.delay(model, op, data, idempotency_key=f"{key}:{run}"))
            for key, model, op, data in SAMPLE_JOBS]
    rows = []
    for key, model, op, result in sent:
        worker.wait_until(result.ready, f"job {key}")
        try:
            value = result.get(timeout=10)
            rows.append((key, f"{model}.{op}", "[green]done[/green]",
                         f"{value['count']} row(s)" + (f", id {value['record'].get('id')}" if "record" in value
                                                       and "id" in value["record"] else "")))
        except Exception as exc:  # the bad job: shown, and kept in the dead-letter table
            rows.append((key, f"{model}.{op}", "[red]failed[/red]", str(exc)))
    return rows


def _show(rows: list[tuple[str, str, str, str]]) -> None:
    table = Table("idempotency key", "job", "state", "result")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print("The second demo-user job returned the first one's result: one row, effect once.")


def _show_state(timber: Any) -> None:
    from sqlalchemy import func, select

    from timber_tasks.jobs import dead_letters, outbox

    with timber.db.session_scope() as session:
        counts = {name: session.scalar(select(func.count()).select_from(timber.get_model(name)))
                  for name in ("User", "Session", "OhlcvPrice", "Notification")}
    console.print(f"rows: {counts}; outbox: {outbox.counts(timber.db) or 'empty'}; "
                  f"dead letters: {len(dead_letters.list_letters(timber.db))} (`timber-tasks dlq list`)")
