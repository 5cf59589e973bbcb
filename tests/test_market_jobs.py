"""Market-data jobs on real workers, on every platform: a big symbol list fans out, results come back per symbol."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import pytest

from timber_tasks.errors import ValidationError
from timber_tasks.jobs import outbox

from .market_helpers import bars, count, refuse_close_above, stored, write
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


def test_a_symbol_whose_bars_the_database_refuses_fails_alone_in_a_job(platform: Platform) -> None:
    files = Path(platform.env["TIMBER_DATA_DIR"]) / "market_data"
    for n, symbol in enumerate(["OKJA", "OKJB"]):
        write(files, symbol, bars(days=6, base=10 * (n + 1)))
    write(files, "CAPPED", bars(days=6, base=5000))
    refuse_close_above(platform.timber, 1000)  # a database rule the checks before the write do not know
    platform.start_worker(queues="market_data")
    symbols = ["OKJA", "CAPPED", "OKJB"]
    # The bounds as a caller may send them: with an offset (Jan 2, 00:00 UTC) or without one (UTC).
    result = platform.task(FETCH).delay(symbols, start="2024-01-02T05:00:00+05:00", end="2024-01-06",
                                        provider="file").get(timeout=120)
    answers = result["symbols"]
    assert answers["OKJA"] == {"status": "ok", "written": 4, "skipped": 0, "rejected": {}, "error": None}
    assert answers["OKJB"]["status"] == "ok" and answers["OKJB"]["written"] == 4
    assert answers["CAPPED"]["status"] == "failed" and answers["CAPPED"]["written"] == 0
    assert answers["CAPPED"]["error"].startswith("the database refused its bars: ")
    assert "above the cap of 1000" in answers["CAPPED"]["error"]
    assert result["totals"] == {"symbols": 3, "written": 8, "skipped": 0, "failed": 1}
    assert sorted(stored(platform.timber, "OKJA")) == [datetime(2024, 1, d) for d in (2, 3, 4, 5)]
    assert stored(platform.timber, "CAPPED") == {} and count(platform.timber) == 8
    with pytest.raises(ValidationError, match=r"OhlcvPrice\.start: '2024-13-01' is not a date"):
        platform.task(FETCH).delay(symbols, start="2024-13-01", provider="file").get(timeout=60)
