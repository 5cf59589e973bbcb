"""The market-data pipeline with the file provider, on SQLite and PostgreSQL: normalise, upsert, refresh."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from timber_tasks import initialize_timber
from timber_tasks.errors import ConfigError, ValidationError
from timber_tasks.features import writes
from timber_tasks.features.cache import get_cached
from timber_tasks.market_data import ingest, store
from timber_tasks.market_data.normalize import COLUMNS, normalize
from timber_tasks.market_data.providers import get_provider
from timber_tasks.market_data.providers.file import FileProvider

from .conftest import ROOT
from .market_helpers import bars, count, stored, write

START = datetime(2023, 12, 1)


@pytest.fixture
def files(tmp_path: Path) -> Path:
    return tmp_path / "prices"


def _timber(database_url: str, redis: str | None = None) -> Any:
    return initialize_timber(model_config_dirs=[ROOT / "model_configs"], database_url=database_url, redis_url=redis)


def _run(timber: Any, files: Path, symbols: list[str], **kw: Any) -> dict[str, dict[str, Any]]:
    return ingest.fetch_and_store(timber, symbols, provider=FileProvider(files), **kw)


def test_normalize_gives_one_shape_and_reports_refused_rows_by_reason() -> None:
    raw = bars(days=6).set_index("Date")
    raw.loc[raw.index[1], "Open"] = np.nan
    raw.loc[raw.index[2], "Volume"] = -1
    raw.loc[raw.index[3], "High"] = 1.0  # below its low
    result = normalize(raw.tz_localize("America/New_York"), "AAA", "1d", "file")
    assert list(result.frame.columns) == COLUMNS
    assert result.rejected == {"AAA": {"NaN price": 1, "negative volume": 1, "high below low": 1}}
    assert len(result.frame) == 3 and set(result.frame["symbol"]) == {"AAA"}
    # New York midnight is 05:00 UTC: timestamps are stored as UTC.
    assert result.frame["ts"].iloc[0] == pd.Timestamp("2024-01-01 05:00")
    assert result.frame["adj_close"].iloc[0] == 100.5 and result.frame["dividends"].iloc[0] == 0


def test_normalize_names_the_symbol_and_source_when_a_price_column_is_missing() -> None:
    with pytest.raises(ValueError, match=r"AAA: the file data has no low column"):
        normalize(bars().drop(columns=["Low"]).set_index("Date"), "AAA", "1d", "file")


def test_an_unknown_provider_or_interval_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown market-data provider 'nope'.*known: file, yfinance"):
        get_provider("nope", data_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"provider 'tests.market_helpers:nothing' cannot be loaded"):
        get_provider("tests.market_helpers:nothing", data_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"provider 'tests.market_helpers:bars' is not a subclass of"):
        get_provider("tests.market_helpers:bars", data_dir=tmp_path)
    assert get_provider("tests.market_helpers:MeteredFileProvider", data_dir=tmp_path).requests_for(["A", "B"]) == 2
    timber = _timber(f"sqlite:///{tmp_path / 't.db'}")
    with pytest.raises(ValidationError, match=r"OhlcvPrice.interval: '7x' is not one of"):
        ingest.fetch_and_store(timber, ["AAA"], interval="7x", provider=FileProvider(tmp_path))


def test_fetch_stores_bars_and_the_same_fetch_twice_changes_nothing(database_url: str, files: Path) -> None:
    write(files, "AAA", bars())
    write(files, "BBB", bars(base=50), parquet=True)
    timber = _timber(database_url)
    first = _run(timber, files, ["AAA", "bbb"], start=START)
    assert first["AAA"] == {"status": "ok", "written": 10, "skipped": 0, "rejected": {}, "error": None}
    assert first["BBB"]["written"] == 10
    before = stored(timber, "AAA")
    assert before[datetime(2024, 1, 1)][:3] == (101.0, 100.5, 1000)
    again = _run(timber, files, ["AAA", "BBB"], start=START)
    assert {s: (r["written"], r["skipped"]) for s, r in again.items()} == {"AAA": (0, 10), "BBB": (0, 10)}
    assert stored(timber, "AAA") == before  # not even fetched_at moved: unchanged rows are not rewritten
    assert count(timber) == 20


def test_a_refresh_starts_at_the_watermark_minus_the_look_back_and_picks_up_corrections(
        database_url: str, files: Path) -> None:
    frame = bars(days=20)
    write(files, "AAA", frame)
    timber = _timber(database_url)
    _run(timber, files, ["AAA"], start=START)
    corrected = frame.copy()
    corrected.loc[18, "Close"] = 120.0  # inside the 7-day look-back before the watermark (Jan 20)
    corrected.loc[2, "Close"] = 90.0  # long before it: a refresh does not ask for it
    new_day = bars(start="2024-01-21", days=1, base=130)
    write(files, "AAA", pd.concat([corrected, new_day], ignore_index=True))
    result = _run(timber, files, ["AAA"])
    assert result["AAA"]["written"] == 2  # the correction and the new bar
    assert result["AAA"]["skipped"] == 7  # Jan 13..20 minus the corrected one, re-read and unchanged
    rows = stored(timber, "AAA")
    assert rows[datetime(2024, 1, 19)][0] == 120.0 and rows[datetime(2024, 1, 3)][0] == 103.0
    assert datetime(2024, 1, 21) in rows and len(rows) == 21
    # A shorter look-back misses the correction; an explicit start reaches the old one.
    assert _run(timber, files, ["AAA"], lookback=timedelta(days=0))["AAA"]["written"] == 0
    assert _run(timber, files, ["AAA"], start=START)["AAA"]["written"] == 1
    assert stored(timber, "AAA")[datetime(2024, 1, 3)][0] == 90.0


def test_a_failing_symbol_among_good_ones_fails_alone(database_url: str, files: Path) -> None:
    write(files, "GOOD", bars())
    broken = bars()
    broken.loc[[1, 2], "High"] = 0.0
    write(files, "HALF", broken)
    write(files, "ALLBAD", bars().assign(Volume=-1))
    (files / "1d" / "GARBLED.csv").write_text("no,dates,here\n1,2,3\n")
    timber = _timber(database_url)
    result = _run(timber, files, ["GOOD", "MISSING", "HALF", "ALLBAD", "GARBLED"], start=START)
    assert result["GOOD"]["status"] == "ok" and result["GOOD"]["written"] == 10
    assert result["HALF"] == {"status": "partial", "written": 8, "skipped": 0,
                              "rejected": {"high below low": 2}, "error": None}
    assert result["MISSING"]["status"] == "failed" and "no file" in result["MISSING"]["error"]
    assert result["ALLBAD"]["status"] == "failed" and result["ALLBAD"]["error"] == "all 10 rows rejected"
    assert result["GARBLED"]["status"] == "failed" and "GARBLED.csv: unreadable" in result["GARBLED"]["error"]
    assert count(timber) == 18
    Watermark = timber.get_model("MarketDataWatermark")
    with timber.db.session_scope() as session:
        marks = {m.symbol: m for m in session.query(Watermark)}
        assert marks["GOOD"].watermark == datetime(2024, 1, 10) and marks["GOOD"].last_status == "ok"
        assert marks["MISSING"].watermark is None and marks["MISSING"].last_status == "failed"
        assert "no file" in marks["MISSING"].last_error and marks["HALF"].last_rejected == 2


def test_the_watermark_never_moves_back(database_url: str, files: Path) -> None:
    write(files, "AAA", bars(days=10))
    timber = _timber(database_url)
    _run(timber, files, ["AAA"], start=START)
    write(files, "AAA", bars(days=3))  # an older, shorter file: upserts, but the watermark stays
    _run(timber, files, ["AAA"], start=START)
    Watermark = timber.get_model("MarketDataWatermark")
    with timber.db.session_scope() as session:
        assert session.get(Watermark, ("AAA", "1d")).watermark == datetime(2024, 1, 10)


@pytest.mark.parametrize("with_redis", [False, True], ids=["l1", "l1+redis"])
def test_cached_prices_are_fresh_after_an_upsert(database_url: str, files: Path, with_redis: bool,
                                                 request: pytest.FixtureRequest) -> None:
    redis = request.getfixturevalue("redis_url") if with_redis else None
    write(files, "AAA", bars())
    timber = _timber(database_url, redis)
    _run(timber, files, ["AAA"], start=START)
    key = ("AAA", "1d", datetime(2024, 1, 5))
    assert float(get_cached(timber, "OhlcvPrice", key)["close"]) == 105.0
    assert float(get_cached(timber, "OhlcvPrice", key)["close"]) == 105.0  # now served from the cache
    assert timber.cache.stats()["OhlcvPrice"]["hits_l1"] >= 1
    corrected = bars()
    corrected.loc[4, "Close"] = 111.0
    write(files, "AAA", corrected)
    assert _run(timber, files, ["AAA"], start=START)["AAA"]["written"] == 1
    assert float(get_cached(timber, "OhlcvPrice", key)["close"]) == 111.0


def test_warm_latest_loads_the_newest_bar_of_each_symbol(database_url: str, files: Path) -> None:
    write(files, "AAA", bars(days=5))
    write(files, "BBB", bars(days=3))
    timber = _timber(database_url)
    _run(timber, files, ["AAA", "BBB"], start=START)
    assert ingest.warm_latest(timber, ["AAA", "BBB", "NONE"], "1d") == 2
    before = timber.cache.stats()["OhlcvPrice"]["misses"]
    assert get_cached(timber, "OhlcvPrice", ("BBB", "1d", datetime(2024, 1, 3))) is not None
    assert timber.cache.stats()["OhlcvPrice"]["misses"] == before


def test_the_upsert_tells_the_after_write_step_exactly_which_bars_changed(
        database_url: str, files: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    writes.on_commit(seen.append, name="market-test-recorder")
    try:
        write(files, "AAA", bars(days=3))
        timber = _timber(database_url)
        _run(timber, files, ["AAA"], start=START)
        prices = [w.by_model["OhlcvPrice"] for w in seen if "OhlcvPrice" in w.by_model]
        assert len(prices) == 1 and not prices[0].whole_model
        assert prices[0].written == {("AAA", "1d", datetime(2024, 1, d)) for d in (1, 2, 3)}
        seen.clear()
        _run(timber, files, ["AAA"], start=START)  # nothing changed: the hooks hear of no price
        assert not any("OhlcvPrice" in w.by_model for w in seen)
        monkeypatch.setattr(store, "EXACT_KEYS_LIMIT", 1)  # too many keys to list: the model as a whole
        write(files, "AAA", bars(days=3, base=200))
        _run(timber, files, ["AAA"], start=START)
        prices = [w.by_model["OhlcvPrice"] for w in seen if "OhlcvPrice" in w.by_model]
        assert len(prices) == 1 and prices[0].whole_model
    finally:
        writes._commit_hooks.pop("market-test-recorder")
