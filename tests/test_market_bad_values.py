"""Values a provider may send that the price table cannot hold: refused per symbol, never failing the batch.

On SQLite and PostgreSQL. Before these checks, one such row made PostgreSQL's COPY fail the whole chunk.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import create_engine, event, text

from timber_tasks import initialize_timber
from timber_tasks.jobs.faults import is_transient
from timber_tasks.market_data import ingest
from timber_tasks.market_data.providers.file import FileProvider

from .conftest import ROOT
from .market_helpers import bars, count, refuse_close_above, stored, write

START = datetime(2023, 12, 1)


@pytest.fixture
def files(tmp_path: Path) -> Path:
    return tmp_path / "prices"


def _timber(database_url: str) -> Any:
    return initialize_timber(model_config_dirs=[ROOT / "model_configs"], database_url=database_url)


def _run(timber: Any, files: Path, symbols: list[str], **kw: Any) -> dict[str, dict[str, Any]]:
    return ingest.fetch_and_store(timber, symbols, provider=FileProvider(files), start=START, **kw)


def _watermarks(timber: Any) -> dict[str, Any]:
    Watermark = timber.get_model("MarketDataWatermark")
    with timber.db.session_scope() as session:
        return {m.symbol: (m.watermark, m.last_status, m.last_error) for m in session.query(Watermark)}


def test_infinite_prices_and_prices_beyond_the_columns_precision_are_refused_per_symbol(
        database_url: str, files: Path) -> None:
    write(files, "GOOD", bars())
    infinite = bars()
    infinite.loc[1, "Open"] = np.inf
    infinite.loc[2, "Adj Close"] = -np.inf
    write(files, "INF", infinite)
    huge = bars()
    huge.loc[0, "Close"] = 1e12  # Numeric(18, 6) holds |x| < 10^12
    huge.loc[1, "Open"] = -5e15
    huge.loc[2, "Low"] = 999_999_999_999.99  # still fits
    huge.loc[2, "High"] = 999_999_999_999.99
    write(files, "HUGE", huge)
    timber = _timber(database_url)
    result = _run(timber, files, ["GOOD", "INF", "HUGE"])
    assert result["GOOD"] == {"status": "ok", "written": 10, "skipped": 0, "rejected": {}, "error": None}
    assert result["INF"] == {"status": "partial", "written": 8, "skipped": 0, "rejected": {"infinite value": 2},
                             "error": None}
    assert result["HUGE"] == {"status": "partial", "written": 8, "skipped": 0, "error": None,
                              "rejected": {"close beyond Numeric(18, 6)": 1, "open beyond Numeric(18, 6)": 1}}
    assert count(timber) == 26 and datetime(2024, 1, 2) not in stored(timber, "INF")
    Price = timber.get_model("OhlcvPrice")
    with timber.db.session_scope() as session:
        assert float(session.get(Price, ("HUGE", "1d", datetime(2024, 1, 3))).high) == 999_999_999_999.99
    assert {s: m[1] for s, m in _watermarks(timber).items()} == {"GOOD": "ok", "INF": "partial", "HUGE": "partial"}


def test_a_volume_beyond_biginteger_is_refused_and_a_missing_volume_is_stored_as_null(
        database_url: str, files: Path) -> None:
    big = bars().astype({"Volume": float})
    big.loc[0, "Volume"] = 1e19  # beyond 2^63 - 1
    write(files, "BIGVOL", big)
    gaps = bars().astype({"Volume": float})
    gaps.loc[3, "Volume"] = np.nan
    write(files, "GAPVOL", gaps)
    write(files, "NOVOL", bars().drop(columns=["Volume"]))
    timber = _timber(database_url)
    result = _run(timber, files, ["BIGVOL", "GAPVOL", "NOVOL"])
    assert result["BIGVOL"]["rejected"] == {"volume beyond BigInteger": 1} and result["BIGVOL"]["written"] == 9
    # The volume column is nullable: an unknown volume is stored as unknown, not as a made-up 0.
    assert result["GAPVOL"] == {"status": "ok", "written": 10, "skipped": 0, "rejected": {}, "error": None}
    assert stored(timber, "GAPVOL")[datetime(2024, 1, 4)][2] is None
    assert stored(timber, "GAPVOL")[datetime(2024, 1, 5)][2] == 1040
    assert {row[2] for row in stored(timber, "NOVOL").values()} == {None}
    again = _run(timber, files, ["GAPVOL", "NOVOL"])  # NULL compares as unchanged: nothing rewritten
    assert {s: (r["written"], r["skipped"]) for s, r in again.items()} == {"GAPVOL": (0, 10), "NOVOL": (0, 10)}


def test_when_the_database_refuses_a_chunk_anyway_each_symbol_is_stored_alone_and_only_the_refused_one_fails(
        database_url: str, files: Path) -> None:
    write(files, "FIRST", bars())
    write(files, "PRICEY", bars(base=5000))
    write(files, "LAST", bars(base=50))
    timber = _timber(database_url)
    refuse_close_above(timber, 1000)
    result = _run(timber, files, ["FIRST", "PRICEY", "LAST"])
    assert result["FIRST"]["status"] == "ok" and result["FIRST"]["written"] == 10
    assert result["LAST"]["status"] == "ok" and result["LAST"]["written"] == 10
    refused = result["PRICEY"]
    assert refused["status"] == "failed" and refused["written"] == 0
    driver_error = "CheckViolation" if timber.db.dialect == "postgresql" else "IntegrityError"
    assert refused["error"].startswith(f"the database refused its bars: {driver_error}: ")
    assert "above the cap of 1000" in refused["error"]
    assert count(timber) == 20 and stored(timber, "PRICEY") == {}
    marks = _watermarks(timber)
    assert marks["PRICEY"][:2] == (None, "failed") and "above the cap" in marks["PRICEY"][2]
    assert marks["FIRST"][:2] == (datetime(2024, 1, 10), "ok")
    alone = _run(timber, files, ["PRICEY"])  # a chunk of one: refused the same way, without a second try
    assert alone["PRICEY"]["status"] == "failed" and "above the cap" in alone["PRICEY"]["error"]


@contextmanager
def _writes_blocked(timber: Any, database_url: str) -> Iterator[None]:
    """Another connection holds the price table; this Timber gives up waiting after 0.3 s instead of 30 s."""
    engine = timber.db.engine
    postgres = engine.dialect.name == "postgresql"

    @event.listens_for(engine, "connect")
    def wait_briefly(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("SET lock_timeout = '300ms'" if postgres else "PRAGMA busy_timeout = 300")
        cursor.close()

    engine.dispose()  # pooled connections were made before the listener
    if postgres:
        holder = create_engine(database_url).connect()
        holder.execute(text("LOCK TABLE ohlcv_prices IN ACCESS EXCLUSIVE MODE"))
    else:
        raw = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
        raw.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        if postgres:
            holder.rollback()
            holder.close()
            holder.engine.dispose()
        else:
            raw.execute("ROLLBACK")
            raw.close()
        event.remove(engine, "connect", wait_briefly)
        engine.dispose()


def test_a_transient_database_fault_propagates_so_the_job_is_retried(database_url: str, files: Path) -> None:
    write(files, "WAITA", bars())
    write(files, "WAITB", bars(base=50))
    timber = _timber(database_url)
    with _writes_blocked(timber, database_url), pytest.raises(Exception) as raised:
        _run(timber, files, ["WAITA", "WAITB"])
    assert is_transient(raised.value), repr(raised.value)  # lock timeout / database is locked: Celery retries it
    assert count(timber) == 0 and _watermarks(timber) == {}  # not turned into per-symbol failures
    result = _run(timber, files, ["WAITA", "WAITB"])  # the retry, once the lock is gone
    assert result["WAITA"]["written"] == 10 and result["WAITB"]["written"] == 10


def test_a_symbol_longer_than_the_symbol_column_fails_alone_before_any_request(database_url: str, files: Path) -> None:
    long_name = "X" * 17  # OhlcvPrice.symbol is String(16)
    write(files, long_name, bars())
    write(files, "SHORT", bars())
    timber = _timber(database_url)
    result = _run(timber, files, ["SHORT", long_name])
    assert result[long_name] == {"status": "failed", "written": 0, "skipped": 0, "rejected": {},
                                 "error": "longer than the 16 characters of OhlcvPrice.symbol"}
    assert result["SHORT"]["written"] == 10 and count(timber) == 10
    assert set(_watermarks(timber)) == {"SHORT"}


def test_the_bounds_come_from_the_models_column_types() -> None:
    from sqlalchemy import Column, MetaData, Numeric, SmallInteger, Table

    from timber_tasks.market_data.normalize import VALUES, normalize, rules_for

    narrow = Table("narrow_prices", MetaData(), *(Column(c, Numeric(8, 2)) for c in VALUES if c != "volume"),
                   Column("volume", SmallInteger, nullable=False))
    rules = rules_for(narrow)
    assert rules.bounds["close"].limit == 1e6 and rules.bounds["volume"].limit == 2**15
    assert "volume" not in rules.nullable
    raw = bars(days=5).set_index("Date")
    raw.loc[raw.index[0], "Close"] = 999_999.994  # rounds to 999999.99: fits Numeric(8, 2)
    raw.loc[raw.index[1], "Close"] = 999_999.995  # rounds to 10^6: does not
    raw.loc[raw.index[2], "Volume"] = 40_000
    raw["Volume"] = raw["Volume"].astype(float)
    raw.loc[raw.index[3], "Volume"] = np.nan  # NOT NULL here: refused rather than stored as 0
    result = normalize(raw, "NARROW", "1d", "file", rules)
    assert result.rejected == {"NARROW": {"close beyond Numeric(8, 2)": 1, "volume beyond SmallInteger": 1,
                                          "missing volume": 1}}
    assert list(result.frame["close"]) == [999_999.994, 105.0]  # the database rounds the kept one to .99
    shipped = rules_for(initialize_timber(model_config_dirs=[ROOT / "model_configs"],
                                          database_url="sqlite://").get_model("OhlcvPrice"))
    assert shipped.bounds["close"].type_name == "Numeric(18, 6)" and shipped.bounds["close"].limit == 1e12
    assert shipped.bounds["volume"].limit == 2**63 and "volume" in shipped.nullable


def test_a_symbol_that_is_no_ticker_fails_alone_and_no_file_outside_the_folder_is_read(
    database_url: str, files: Path, tmp_path: Path,
) -> None:
    write(tmp_path, "EVIL", bars(), interval=".")  # a price file beside, not inside, the provider's folder
    for symbol in ("BRK-B", "^GSPC", "EURUSD=X"):
        write(files, symbol, bars())
    timber = _timber(database_url)
    hostile = ["../../EVIL", "../EVIL", "A B", "X/Y"]
    result = _run(timber, files, [*hostile, "BRK-B", "^GSPC", "EURUSD=X"])
    for symbol in hostile:
        assert result[symbol]["status"] == "failed" and "not a ticker symbol" in result[symbol]["error"], symbol
    assert all(result[s]["written"] == 10 for s in ("BRK-B", "^GSPC", "EURUSD=X")) and count(timber) == 30
    assert FileProvider(files).path_for("../EVIL", ".") is None  # the provider itself never leaves its folder
