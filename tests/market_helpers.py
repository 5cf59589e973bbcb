"""Small daily-bar datasets the market-data tests write, and reads of what got stored."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import func, select

from timber_tasks.market_data.providers.file import FileProvider


def bars(start: str = "2024-01-01", days: int = 10, base: float = 100.0) -> pd.DataFrame:
    """Clean daily bars: open < close, high above and low below both."""
    step = np.arange(days, dtype=float)
    return pd.DataFrame({
        "Date": pd.date_range(start, periods=days, freq="D"),
        "Open": base + step, "High": base + step + 2, "Low": base + step - 2, "Close": base + step + 1,
        "Adj Close": base + step + 0.5, "Volume": 1000 + np.arange(days) * 10,
    })


def write(folder: Path, symbol: str, frame: pd.DataFrame, interval: str = "1d", parquet: bool = False) -> Path:
    target = folder / interval / f"{symbol}.{'parquet' if parquet else 'csv'}"
    target.parent.mkdir(parents=True, exist_ok=True)
    if parquet:
        frame.to_parquet(target)
    else:
        frame.to_csv(target, index=False)
    return target


def stored(timber: Any, symbol: str, interval: str = "1d") -> dict[datetime, Any]:
    """{ts: row} of one symbol, read straight from the database."""
    Price = timber.get_model("OhlcvPrice")
    with timber.db.session_scope() as session:
        rows = session.scalars(select(Price).where(Price.symbol == symbol, Price.interval == interval))
        return {r.ts: (float(r.close), float(r.adj_close) if r.adj_close is not None else None, r.volume,
                       r.fetched_at) for r in rows}


def count(timber: Any, model: str = "OhlcvPrice") -> int:
    with timber.db.session_scope() as session:
        return int(session.scalar(select(func.count()).select_from(timber.get_model(model))) or 0)


def take_tokens(kind: str, target: str, rate: float, burst: float, start: Any, seconds: float, out: Any) -> None:
    """In a child process: take tokens from the named bucket for `seconds` after `start` is set; report how many."""
    import time

    from timber_tasks.stores.ratelimit import rate_limiter

    limiter = rate_limiter("shared-test", rate, burst, redis_url=target if kind == "redis" else None,
                           data_dir=target)
    start.wait(60)
    granted, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        if limiter.try_acquire(1) == 0:
            granted += 1
        else:
            time.sleep(0.005)
    out.put(granted)


class MeteredFileProvider(FileProvider):
    """The file provider, but each symbol costs a rate-limit token, as a remote provider's request does."""

    name = "metered-file"

    def requests_for(self, symbols: list[str]) -> int:
        return len(symbols)


def refuse_close_above(timber: Any, cap: float) -> None:
    """A database rule the normaliser does not know: bars closing above `cap` are refused by a trigger."""
    from sqlalchemy import text

    with timber.db.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text(f"""
                CREATE FUNCTION refuse_close_above() RETURNS trigger AS $$ BEGIN
                  IF NEW.close > {cap} THEN
                    RAISE EXCEPTION 'close % above the cap of {cap}', NEW.close USING ERRCODE = 'check_violation';
                  END IF;
                  RETURN NEW;
                END $$ LANGUAGE plpgsql"""))
            conn.execute(text("CREATE TRIGGER refuse_close_above BEFORE INSERT OR UPDATE ON ohlcv_prices "
                              "FOR EACH ROW EXECUTE FUNCTION refuse_close_above()"))
            return
        for event in ("INSERT", "UPDATE"):
            conn.execute(text(f"CREATE TRIGGER refuse_close_above_{event.lower()} BEFORE {event} ON ohlcv_prices "
                              f"WHEN NEW.close > {cap} BEGIN SELECT RAISE(ABORT, 'close above the cap of {cap}'); END"))
