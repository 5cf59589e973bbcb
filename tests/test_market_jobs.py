"""Market-data jobs on real workers, on every platform: a big symbol list fans out, results come back per symbol."""

from __future__ import annotations

from pathlib import Path

from timber_tasks.jobs import outbox

from .market_helpers import bars, count, write
from .platforms import Platform

FETCH = "timber.market_data.fetch_prices"


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
