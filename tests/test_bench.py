"""`make bench` runs: every benchmark at a tiny size, so a change that breaks one fails here.

The figures are not looked at (speed is measured by `make bench` on a quiet machine, never in a test).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bench import BENCHMARKS
from tests.conftest import REDIS_DB_BASE, ROOT

TINY = {
    "BENCH_ROUNDS": "1", "BENCH_CLI_ROUNDS": "1",
    "BENCH_SINGLE_JOBS": "10", "BENCH_EMBEDDED_JOBS": "10",
    "BENCH_MARKET_SYMBOLS": "3", "BENCH_MARKET_DAYS": "30", "BENCH_MARKET_EXECUTEMANY_ROWS": "50",
    "BENCH_MARKET_REFRESHES": "1",
    "BENCH_SENTENCES": "64", "BENCH_JOB_ROWS": "16", "BENCH_POINTS": "300",
    "BENCH_GDPR_TOTAL_ROWS": "2000", "BENCH_GDPR_BIG_ROWS": "200", "BENCH_GDPR_REPEATS": "1",
    # a Redis database of its own: the persistence benchmark empties its database first
    "BENCH_REDIS_URL": f"redis://127.0.0.1:6379/{REDIS_DB_BASE + 3}",
}


def test_every_benchmark_module_is_listed() -> None:
    helpers = {"__init__", "__main__", "common", "stock_filesystem_app"}
    modules = {p.stem for p in (ROOT / "bench").glob("*.py")} - helpers
    assert modules == set(BENCHMARKS)


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.timeout(1200)
def test_make_bench_runs_every_benchmark_to_the_end(tmp_path) -> None:
    env = {**os.environ, **TINY, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path)}
    for name in ("DATABASE_URL", "BROKER_URL", "RESULT_BACKEND_URL", "REDIS_URL", "QDRANT_URL",
                 "TIMBER_DATA_DIR", "TIMBER_BEAT_SCHEDULE"):
        env.pop(name, None)
    done = subprocess.run([sys.executable, "-m", "bench"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=1100)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("\n== ") >= len(BENCHMARKS), done.stdout
