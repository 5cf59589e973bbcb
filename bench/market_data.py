"""Market-data bulk upsert on PostgreSQL beside raw COPY and SQLAlchemy executemany, all in this run.

1. 1,000,000 daily bars (500 symbols x 2,000 days) into an empty table: raw COPY into the
   table; our upsert (COPY into a staging table, one INSERT .. ON CONFLICT DO UPDATE); the
   same upsert again (every row unchanged); executemany INSERT .. ON CONFLICT on a slice.
2. An incremental refresh of those 500 symbols with one new bar each: the database part
   (look-back rows + the new bar upserted, watermarks saved, one transaction) and the whole
   fetch_and_store (provider answer, pandas normalisation, database) with an in-memory provider.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert as pg_insert

from bench.common import report, scratch_postgres
from timber_tasks.market_data import ingest, store
from timber_tasks.market_data.normalize import COLUMNS
from timber_tasks.market_data.providers.base import Provider, ProviderResult

SYMBOLS = int(os.environ.get("BENCH_MARKET_SYMBOLS", "500"))
DAYS = int(os.environ.get("BENCH_MARKET_DAYS", "2000"))
EXECUTEMANY_ROWS = int(os.environ.get("BENCH_MARKET_EXECUTEMANY_ROWS", "50000"))  # at ~5k rows/s: a slice
REFRESHES = int(os.environ.get("BENCH_MARKET_REFRESHES", "5"))
FIRST_DAY = datetime(2015, 1, 1)


def bars_frame(symbols: int, days: int, first: datetime) -> pd.DataFrame:
    """Normalised bars: every symbol, every day from `first`."""
    rng = np.random.default_rng(7)
    n = symbols * days
    close = np.round(50 + rng.random(n) * 100, 4)
    return pd.DataFrame({
        "symbol": np.repeat([f"S{i:04d}" for i in range(symbols)], days),
        "interval": "1d",
        "ts": np.tile(pd.date_range(first, periods=days, freq="D").to_numpy(dtype="datetime64[us]"), symbols),
        "open": close - 0.5, "high": close + 1, "low": close - 1, "close": close, "adj_close": close - 0.25,
        "volume": rng.integers(1_000, 1_000_000, n), "dividends": 0.0, "splits": 0.0, "source": "bench",
    })[COLUMNS]


class MemoryProvider(Provider):
    """Answers from a frame in memory, as a provider's raw per-symbol frames."""

    name = "bench"

    def __init__(self, frame: pd.DataFrame) -> None:
        self.by_symbol = {s: f.set_index("ts").tz_localize("UTC") for s, f in frame.groupby("symbol")}

    def fetch(self, symbols: list[str], start: datetime, end: datetime | None, interval: str) -> ProviderResult:
        since = pd.Timestamp(start, tz="UTC")
        return ProviderResult(frames={s: self.by_symbol[s][self.by_symbol[s].index >= since] for s in symbols})


class NoLimit:
    def acquire(self, tokens: float = 1, timeout: float | None = None) -> float:
        return 0.0


def timed(fn: Any) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    from cryptography.fernet import Fernet

    from timber_tasks import runtime

    os.environ.setdefault("TIMBER_ENCRYPTION_KEYS", Fernet.generate_key().decode())
    with scratch_postgres() as database_url:
        timber = runtime.initialize_timber(database_url=database_url,
                                           data_dir=Path(tempfile.mkdtemp(prefix="timber-bench-market-")))
        try:
            run(timber)
        finally:
            runtime.reset()


def run(timber: Any) -> None:
    Price, Watermark = timber.get_model(store.PRICE_MODEL), timber.get_model(store.WATERMARK_MODEL)
    table = Price.__table__.name
    frame = bars_frame(SYMBOLS, DAYS, FIRST_DAY)
    rows = len(frame)

    def truncate() -> None:
        with timber.db.session_scope() as session:
            session.execute(text(f"TRUNCATE {table}, {Watermark.__table__.name}"))

    def raw_copy() -> None:
        with timber.db.session_scope() as session:
            buffer = store.csv_bytes(frame.assign(fetched_at=datetime(2026, 1, 1)))  # the upsert's CSV writer
            cols = ", ".join(f'"{c}"' for c in [*COLUMNS, "fetched_at"])
            cursor = session.connection().connection.dbapi_connection.cursor()
            cursor.copy_expert(f'COPY {table} ({cols}) FROM STDIN WITH (FORMAT csv)', buffer)

    def upsert(data: pd.DataFrame = frame) -> int:
        with timber.db.session_scope() as session:
            done = store.upsert_prices(session, Price, data)
            store.declare_writes(session, Price, done)
            return sum(done.written.values())

    copy_times, upsert_times, rerun_times = [], [], []
    for _ in range(3):
        truncate()
        copy_times.append(timed(raw_copy))
        truncate()
        upsert_times.append(timed(upsert))
        rerun_times.append(timed(upsert))
    assert upsert(frame) == 0, "an unchanged re-run must write nothing"

    sample = _records(frame.iloc[:EXECUTEMANY_ROWS])
    stmt = pg_insert(Price.__table__)
    stmt = stmt.on_conflict_do_update(index_elements=list(store.KEY_COLUMNS),
                                      set_={c: stmt.excluded[c] for c in COLUMNS if c not in store.KEY_COLUMNS})
    truncate()
    with timber.db.session_scope() as session:
        executemany = timed(lambda: session.execute(stmt, sample))
    figures = [
        ("raw COPY into the table", rows / statistics.median(copy_times), "rows/s"),
        ("upsert: COPY to stage + INSERT .. ON CONFLICT", rows / statistics.median(upsert_times), "rows/s"),
        ("same upsert again, every row unchanged", rows / statistics.median(rerun_times), "rows/s"),
        (f"executemany INSERT .. ON CONFLICT ({len(sample):,} rows)", len(sample) / executemany, "rows/s"),
    ]
    report(f"Market data bulk upsert, PostgreSQL, {rows:,} daily bars ({SYMBOLS} symbols x {DAYS} days)",
           figures, "raw COPY into the table")
    refresh(timber, frame)


def refresh(timber: Any, frame: pd.DataFrame) -> None:
    """One new bar per symbol: the database part alone, then the whole incremental fetch."""
    Price, Watermark = timber.get_model(store.PRICE_MODEL), timber.get_model(store.WATERMARK_MODEL)
    truncate_and_load(timber, frame)
    history, day = frame, frame["ts"].max().to_pydatetime()
    window = ingest.lookback_for("1d")
    db_times, e2e_times, e2e_db_times = [], [], []
    in_database = _time_sessions(timber)
    for _ in range(REFRESHES):
        # (a) the database part: the look-back rows (unchanged) and the new bar, and the watermarks
        day += timedelta(days=1)
        history = pd.concat([history, bars_frame(SYMBOLS, 1, day)], ignore_index=True)
        batch = history[history["ts"] > pd.Timestamp(day - window)]
        marks = [{"symbol": s, "interval": "1d", "watermark": day, "last_run_at": datetime.now(), "last_status": "ok",
                  "last_written": 1, "last_skipped": 0, "last_rejected": 0, "last_error": None, "source": "bench"}
                 for s in batch["symbol"].unique()]

        def database_part(batch: pd.DataFrame = batch, marks: list[dict[str, Any]] = marks) -> None:
            with timber.db.session_scope() as session:
                done = store.upsert_prices(session, Price, batch)
                store.save_watermarks(session, Watermark, marks)
                store.declare_writes(session, Price, done)
                assert sum(done.written.values()) == SYMBOLS

        db_times.append(timed(database_part))
        # (b) the whole job: the provider answers from the watermark minus the look-back
        day += timedelta(days=1)
        history = pd.concat([history, bars_frame(SYMBOLS, 1, day)], ignore_index=True)
        provider = MemoryProvider(history[history["ts"] > pd.Timestamp(day - 2 * window)])
        in_database.clear()
        started = time.perf_counter()
        results = ingest.fetch_and_store(timber, sorted(provider.by_symbol), provider=provider,
                                         limiter=NoLimit())  # type: ignore[arg-type]
        e2e_times.append(time.perf_counter() - started)
        e2e_db_times.append(sum(in_database))
        assert ingest.summarize(results)["written"] == SYMBOLS, ingest.summarize(results)
    print(f"\n== Incremental refresh: {SYMBOLS} symbols, one new bar each, look-back {window.days} days "
          f"(median of {REFRESHES}; aim: under 1 s of database time)")
    print(f"  database part alone (upsert {len(batch):,} rows, {SYMBOLS} watermarks, one transaction)"
          f"  {statistics.median(db_times):8.3f} s")
    print(f"  whole fetch_and_store (in-memory provider, normalise, upsert, watermarks)"
          f"  {statistics.median(e2e_times):8.3f} s, in database sessions {statistics.median(e2e_db_times):.3f} s")


def _time_sessions(timber: Any) -> list[float]:
    """Wrap the database's session_scope: seconds spent inside each (SQL, COPY and commit) are appended."""
    spent: list[float] = []
    original = timber.db.session_scope

    @contextlib.contextmanager
    def timed_scope() -> Any:
        started = time.perf_counter()
        with original() as session:
            yield session
        spent.append(time.perf_counter() - started)

    timber.db.session_scope = timed_scope
    return spent


def truncate_and_load(timber: Any, frame: pd.DataFrame) -> None:
    Price, Watermark = timber.get_model(store.PRICE_MODEL), timber.get_model(store.WATERMARK_MODEL)
    with timber.db.session_scope() as session:
        session.execute(text(f"TRUNCATE {Price.__table__.name}, {Watermark.__table__.name}"))
        store.upsert_prices(session, Price, frame)
        last = frame["ts"].max().to_pydatetime()
        store.save_watermarks(session, Watermark, [
            {"symbol": s, "interval": "1d", "watermark": last, "last_run_at": datetime.now(), "last_status": "ok",
             "last_written": 0, "last_skipped": 0, "last_rejected": 0, "last_error": None, "source": "bench"}
            for s in frame["symbol"].unique()])
        session.execute(text(f"ANALYZE {Price.__table__.name}"))


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = frame.to_dict("records")
    for r in records:
        r["ts"] = r["ts"].to_pydatetime()
    return records
