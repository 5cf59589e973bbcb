"""Market-data jobs on real workers, on every platform: a big symbol list fans out, results come back per symbol."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from timber_tasks.jobs import outbox

from .market_helpers import bars, count, stored, write
from .platforms import Platform

FETCH = "timber.market_data.fetch_prices"
METERED = "tests.market_helpers:MeteredFileProvider"  # a provider named by module path, as an app's own


def test_fetch_prices_fans_out_in_batches_and_reports_every_symbol(platform: Platform) -> None:
    files = Path(platform.env["TIMBER_DATA_DIR"]) / "market_data"  # the file provider's default folder
    for n, symbol in enumerate(["JOBA", "JOBB", "JOBC", "JOBD"]):
        write(files, symbol, bars(days=6, base=10 * (n + 1)))
    broken = bars(days=6)
    broken.loc[0, "Volume"] = -3
    write(files, "JOBE", broken)
    platform.start_worker(queues="market_data,maintenance")
    fetch = platform.task(FETCH)
    symbols = ["JOBA", "JOBB", "JOBC", "NOPE", "JOBD", "JOBE"]
    result = fetch.delay(symbols, start="2023-12-01", provider="file", batch_size=2, warm=True).get(timeout=180)
    assert list(result["symbols"]) == symbols  # three batch jobs, merged back in order
    assert result["symbols"]["NOPE"]["status"] == "failed" and "no file" in result["symbols"]["NOPE"]["error"]
    assert result["symbols"]["JOBE"] == {"status": "partial", "written": 5, "skipped": 0,
                                         "rejected": {"negative volume": 1}, "error": None}
    assert result["totals"] == {"symbols": 6, "written": 29, "skipped": 0, "failed": 1}
    assert result["warmed"] == 5 and count(platform.timber) == 29
    again = fetch.delay(symbols[:2], start="2023-12-01", provider="file").get(timeout=120)  # one job, no fan-out
    assert again["totals"] == {"symbols": 2, "written": 0, "skipped": 12, "failed": 0}
    assert count(platform.timber, "MarketDataWatermark") == 6
    assert outbox.counts(platform.timber.db) == {}  # the fan-out job, its batches and the merge all finished


@pytest.mark.parametrize("platform", ["embedded", "redis"], indirect=True)
def test_two_worker_processes_draw_on_one_rate_limit(platform: Platform) -> None:
    files = Path(platform.env["TIMBER_DATA_DIR"]) / "market_data"
    symbols = [f"RATE{n}" for n in range(6)]
    for symbol in symbols:
        write(files, symbol, bars(days=3))
    # 1 request per second, no burst to speak of: one shared bucket spaces six requests >= 5 s apart in
    # all; a bucket per process would let two workers take them in about half that.
    limits = {"TIMBER_MARKET_DATA_RATE": "1", "TIMBER_MARKET_DATA_BURST": "1"}
    if platform.name == "redis":
        limits["REDIS_URL"] = platform.env["BROKER_URL"]  # the bucket in Redis, for every host
    for _ in range(2):
        platform.start_worker(queues="market_data", concurrency=1, extra_env=limits)
    batch = platform.task("timber.market_data.fetch_batch")
    results = [batch.delay([symbol], start="2023-12-01", provider=METERED) for symbol in symbols]
    assert all(r.get(timeout=120)[s]["status"] == "ok" for r, s in zip(results, symbols, strict=True))
    fetched = sorted(min(row[3] for row in stored(platform.timber, s).values()) for s in symbols)
    assert (fetched[-1] - fetched[0]).total_seconds() >= 4.5, fetched
    took = [len(re.findall(r"fetch_batch\[[0-9a-f-]+\] received", platform.log_of(p))) for p, _ in platform.processes]
    assert len(took) == 2 and all(took), took  # both workers fetched
