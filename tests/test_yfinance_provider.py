"""The yfinance provider with yfinance's own request and parsing code running, answered by canned Yahoo JSON."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from timber_tasks import initialize_timber
from timber_tasks.market_data import ingest
from timber_tasks.market_data.providers.yfinance import YFinanceProvider
from timber_tasks.stores.ratelimit.local import LocalRateLimiter

from .conftest import ROOT
from .market_helpers import stored
from .yahoo_canned import CannedYahoo, daily_bars

START = datetime(2024, 1, 1)


def _fetch(tmp_path: Path, database_url: str, yahoo: CannedYahoo, symbols: list[str], **kw: Any) -> Any:
    timber = initialize_timber(model_config_dirs=[ROOT / "model_configs"], database_url=database_url)
    provider = YFinanceProvider(session=yahoo, cache_dir=tmp_path / "yfinance")
    limiter = LocalRateLimiter("yahoo-test", rate=1000, burst=100, folder=tmp_path / "limits")
    # end=None: yfinance asks up to now and does not serve the answer from its in-process cache
    return timber, ingest.fetch_and_store(timber, symbols, start=START, provider=provider, limiter=limiter,
                                          backoff=0.01, **kw)


def test_a_multi_ticker_download_keeps_raw_and_adjusted_close_and_dividends(tmp_path: Path, database_url: str) -> None:
    one, two = daily_bars("2024-01-02", 5, 100), daily_bars("2024-01-02", 3, 50)
    yahoo = CannedYahoo({"MULTA": one, "MULTB": two}, dividends={"MULTA": {one[2]["t"]: 0.24}})
    timber, result = _fetch(tmp_path, database_url, yahoo, ["MULTA", "multb"])
    assert result["MULTA"] == {"status": "ok", "written": 5, "skipped": 0, "rejected": {}, "error": None}
    assert result["MULTB"]["written"] == 3
    rows = stored(timber, "MULTA")
    # Daily bars are stored at the exchange date, 00:00 UTC; close and adjusted close both kept.
    assert rows[datetime(2024, 1, 2)][:3] == (101.0, 100.5, 1_000_000)
    assert {symbol for symbol, _ in yahoo.charts} == {"MULTA", "MULTB"}  # yfinance asked for each
    assert any("period1" in params and params["interval"] == "1d" for _, params in yahoo.charts)
    Price = timber.get_model("OhlcvPrice")
    with timber.db.session_scope() as session:
        bar = session.get(Price, ("MULTA", "1d", datetime(2024, 1, 4)))
        assert float(bar.dividends) == 0.24 and bar.source == "yfinance"


def test_a_delisted_symbol_fails_alone_with_yahoos_reason(tmp_path: Path, database_url: str) -> None:
    yahoo = CannedYahoo({"LIVEA": daily_bars("2024-01-02", 4, 10)})
    timber, result = _fetch(tmp_path, database_url, yahoo, ["LIVEA", "GONEA"])
    assert result["LIVEA"]["status"] == "ok" and result["LIVEA"]["written"] == 4
    assert result["GONEA"]["status"] == "failed" and "delisted" in result["GONEA"]["error"]
    assert stored(timber, "GONEA") == {}


def test_a_429_answer_is_retried_with_backoff_until_it_passes(tmp_path: Path, database_url: str) -> None:
    yahoo = CannedYahoo({"BUSYA": daily_bars("2024-01-02", 3, 10), "CALMA": daily_bars("2024-01-02", 3, 20)},
                        rate_limit={"BUSYA": 2})
    timber, result = _fetch(tmp_path, database_url, yahoo, ["BUSYA", "CALMA"])
    assert result["BUSYA"]["status"] == "ok" and result["BUSYA"]["written"] == 3
    assert result["CALMA"]["written"] == 3 and len(stored(timber, "BUSYA")) == 3
    assert yahoo.rate_limit["BUSYA"] == 0  # both 429s were met, and the symbol was asked again after them


def test_a_provider_that_keeps_answering_429_fails_that_symbol_only(tmp_path: Path) -> None:
    yahoo = CannedYahoo({"SLOWA": daily_bars("2024-01-02", 3, 10), "FINEA": daily_bars("2024-01-02", 3, 20)},
                        rate_limit={"SLOWA": 1000})
    _, result = _fetch(tmp_path, f"sqlite:///{tmp_path / 't.db'}", yahoo, ["SLOWA", "FINEA"],
                       rate_limit_retries=2)
    assert result["SLOWA"] == {"status": "failed", "written": 0, "skipped": 0, "rejected": {},
                               "error": "yfinance rate-limited it 3 times"}
    assert result["FINEA"]["written"] == 3


def test_the_provider_returns_daily_frames_indexed_in_utc(tmp_path: Path) -> None:
    yahoo = CannedYahoo({"UTCA": daily_bars("2024-01-02", 2, 10)})
    frames = YFinanceProvider(session=yahoo, cache_dir=tmp_path / "yf").fetch(["UTCA"], START, None, "1d")
    frame = frames.frames["UTCA"]
    assert str(frame.index.tz) == "UTC" and list(frame["Adj Close"]) == [10.5, 11.5]


def test_yfinance_is_asked_for_exactly_the_utc_window_whatever_the_exchanges_zone(tmp_path: Path) -> None:
    yahoo = CannedYahoo({"WINDA": daily_bars("2024-01-02", 5, 10), "WINDB": daily_bars("2024-01-02", 5, 10)})
    timber = initialize_timber(model_config_dirs=[ROOT / "model_configs"], database_url=f"sqlite:///{tmp_path}/t.db")
    provider = YFinanceProvider(session=yahoo, cache_dir=tmp_path / "yfinance")
    limiter = LocalRateLimiter("yahoo-test", rate=1000, burst=100, folder=tmp_path / "limits")
    start, end = datetime(2024, 1, 3), datetime(2024, 1, 6)  # naive: UTC, as watermarks are stored
    result = ingest.fetch_and_store(timber, ["WINDA"], start=start, end=end, provider=provider, limiter=limiter)
    # An exchange in New York: yfinance would read naive bounds there, 5 hours late.
    asked = [params for symbol, params in yahoo.charts if symbol == "WINDA" and "period1" in params]
    assert [(int(p["period1"]), int(p["period2"])) for p in asked] == [
        (int(start.replace(tzinfo=UTC).timestamp()), int(end.replace(tzinfo=UTC).timestamp()))]
    assert result["WINDA"]["written"] == 3  # the bars of Jan 3, 4 and 5 (14:30 UTC each)
    plus_two = timezone(timedelta(hours=2))
    aware = ingest.fetch_and_store(timber, ["WINDB"], start="2024-01-03T02:00:00+02:00",
                                   end=datetime(2024, 1, 6, 2, tzinfo=plus_two), provider=provider, limiter=limiter)
    asked = [params for symbol, params in yahoo.charts if symbol == "WINDB" and "period1" in params]
    assert [(int(p["period1"]), int(p["period2"])) for p in asked] == [
        (int(start.replace(tzinfo=UTC).timestamp()), int(end.replace(tzinfo=UTC).timestamp()))]
    assert aware["WINDB"]["written"] == 3
