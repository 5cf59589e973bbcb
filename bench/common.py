"""Timing helpers shared by the benchmarks."""

from __future__ import annotations

import os
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

ADMIN_URL = os.environ.get("BENCH_POSTGRES_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")


@contextmanager
def scratch_postgres() -> Iterator[str]:
    """A fresh PostgreSQL database for one benchmark, dropped afterwards; yields its URL."""
    name = f"timber_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def empty_beat_schedule(folder: Path) -> str:
    """A beat file with no entries: a benchmark's workers run no relay or warming beside the figures.

    The file must exist: a TIMBER_BEAT_SCHEDULE that names a missing file stops the platform at start.
    """
    path = folder / "no-beat-entries.yaml"
    path.write_text("entries: {}\n", encoding="utf-8")
    return str(path)


def best_of(fn: Callable[[], Any], repeat: int = 5) -> float:
    """Median seconds of `repeat` runs (after one warm-up): steadier than the mean on a busy box."""
    fn()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def report(title: str, rows: list[tuple[str, float, str]], baseline: str) -> None:
    """Print name, figure and ratio to the named baseline row."""
    base = next(value for name, value, _ in rows if name == baseline)
    print(f"\n== {title}")
    for name, value, unit in rows:
        print(f"  {name:<48} {value:>12,.1f} {unit:<10} {value / base:6.2f}x of {baseline}")
