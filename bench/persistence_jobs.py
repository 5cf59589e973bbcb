"""Persistence jobs through Redis + PostgreSQL, beside a Celery no-op task and raw SQLAlchemy inserts.

One worker with 2 prefork processes drains each batch of jobs; every figure is measured in
this run, on this machine, so the ratios are what to read.
"""

from __future__ import annotations

import datetime as dt
import decimal
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
from celery.result import ResultSet
from sqlalchemy import insert

from bench.common import empty_beat_schedule, report, scratch_postgres

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/3")
SINGLE_JOBS = int(os.environ.get("BENCH_SINGLE_JOBS", "2000"))
BATCH_JOBS, BATCH_ROWS = 20, 1000
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
FIGURES = {
    "enqueue": "Celery no-op task: enqueue from one process",
    "noop": "Celery no-op task: enqueue + drain",
    "single": "persist single-row create: enqueue + drain",
    "raw": "raw SQLAlchemy Core executemany INSERT (in-process)",
    "batch": "persist batch create jobs (validated, idempotent)",
}
BASE_TS = dt.datetime(2000, 1, 1)


def bar(n: int, as_json: bool) -> dict[str, Any]:
    ts = BASE_TS + dt.timedelta(minutes=n)
    price = decimal.Decimal("100.25") + n % 50
    row = {"symbol": "BENCH", "interval": "1m", "ts": ts, "open": price, "high": price + 1, "low": price - 1,
           "close": price, "adj_close": price, "volume": 1000 + n}
    if as_json:  # what a job receives: JSON types only
        row.update(ts=ts.isoformat(), **{k: str(row[k]) for k in ("open", "high", "low", "close", "adj_close")})
    return row


def drain(results: list[Any], started: float) -> float:
    ResultSet(results).join_native(timeout=600, propagate=True)  # batched reads: the client is no bottleneck
    return time.perf_counter() - started


def main() -> None:
    with scratch_postgres() as database_url:
        _run(database_url)


def _run(database_url: str) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="timber-bench-"))
    from cryptography.fernet import Fernet

    env = {"DATABASE_URL": database_url, "BROKER_URL": REDIS_URL, "RESULT_BACKEND_URL": REDIS_URL,
           "TIMBER_DATA_DIR": str(tmp), "TIMBER_BEAT_SCHEDULE": empty_beat_schedule(tmp),
           "TIMBER_ENCRYPTION_KEYS": os.environ.get("TIMBER_ENCRYPTION_KEYS") or Fernet.generate_key().decode()}
    os.environ.update(env)
    with redis.Redis.from_url(REDIS_URL) as client:
        client.flushdb()
    worker = None
    try:
        from timber_tasks import runtime
        from timber_tasks.celery_app import make_celery
        from timber_tasks.settings import Settings

        timber = runtime.initialize_timber(create_tables=True)
        app = make_celery(Settings.load())
        app.set_current()
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "timber_tasks", "worker", "-Q", "persistence,maintenance",
             "-c", "2", "-P", "prefork", "-l", "WARNING", "--without-heartbeat", "--without-mingle",
             "--without-gossip"], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True)
        noop, persist = app.tasks["timber.maintenance.noop"], app.tasks["timber.persistence.persist"]
        noop.delay().get(timeout=120)  # the worker is up and warm
        table = timber.get_model("OhlcvPrice").__table__
        rates: dict[str, list[float]] = {name: [] for name in FIGURES}
        offset = 0
        for _ in range(ROUNDS):  # interleaved rounds, medians reported: the machine is shared and noisy
            started = time.perf_counter()
            sent = [noop.delay() for _ in range(SINGLE_JOBS)]
            rates["enqueue"].append(SINGLE_JOBS / (time.perf_counter() - started))
            rates["noop"].append(SINGLE_JOBS / drain(sent, started))

            started = time.perf_counter()
            sent = [persist.delay("OhlcvPrice", "create", bar(offset + n, True)) for n in range(SINGLE_JOBS)]
            rates["single"].append(SINGLE_JOBS / drain(sent, started))
            offset += SINGLE_JOBS

            batches = [[bar(offset + b * BATCH_ROWS + i, True) for i in range(BATCH_ROWS)] for b in range(BATCH_JOBS)]
            started = time.perf_counter()
            sent = [persist.delay("OhlcvPrice", "create", rows) for rows in batches]
            rates["batch"].append(BATCH_JOBS * BATCH_ROWS / drain(sent, started))
            offset += BATCH_JOBS * BATCH_ROWS

            raw_batches = [[bar(offset + b * BATCH_ROWS + i, False) | {"source": "yfinance", "fetched_at": BASE_TS}
                            for i in range(BATCH_ROWS)] for b in range(BATCH_JOBS)]
            started = time.perf_counter()
            for rows in raw_batches:
                with timber.db.engine.begin() as conn:
                    conn.execute(insert(table), rows)
            rates["raw"].append(BATCH_JOBS * BATCH_ROWS / (time.perf_counter() - started))
            offset += BATCH_JOBS * BATCH_ROWS

        median = {name: statistics.median(values) for name, values in rates.items()}
        report(f"persistence jobs, Redis broker + PostgreSQL, one worker x 2 processes (median of {ROUNDS})", [
            (FIGURES["enqueue"], median["enqueue"], "jobs/s"),
            (FIGURES["noop"], median["noop"], "jobs/s"),
            (FIGURES["single"], median["single"], "jobs/s"),
        ], baseline=FIGURES["noop"])
        report(f"batch jobs ({BATCH_JOBS} x {BATCH_ROWS} rows, median of {ROUNDS})", [
            (FIGURES["raw"], median["raw"], "rows/s"),
            (FIGURES["batch"], median["batch"], "rows/s"),
        ], baseline=FIGURES["raw"])
        for name, values in rates.items():
            print(f"  {FIGURES[name]}: " + ", ".join(f"{v:,.0f}" for v in values))
        app.close()
        timber.close()
    finally:
        if worker is not None:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(60)


if __name__ == "__main__":
    main()
