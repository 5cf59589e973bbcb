"""One frame shape for every provider, and the rows it refuses (reported per symbol, never stored)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from timber_tasks.errors import ValidationError

# The columns of a normalised frame, in the order the database table has them.
COLUMNS = ["symbol", "interval", "ts", "open", "high", "low", "close", "adj_close", "volume",
           "dividends", "splits", "source"]
PRICES = ["open", "high", "low", "close"]
INTERVALS = ("1m", "2m", "5m", "15m", "30m", "60m", "90m", "1h", "1d", "5d", "1wk", "1mo", "3mo")

# Provider spellings (after lower-casing and dropping spaces and underscores) -> our column.
ALIASES = {
    "open": "open", "high": "high", "low": "low", "close": "close",
    "adjclose": "adj_close", "adjustedclose": "adj_close",
    "volume": "volume", "dividends": "dividends", "dividend": "dividends",
    "stocksplits": "splits", "splits": "splits", "split": "splits",
}


VALUES = ["open", "high", "low", "close", "adj_close", "volume", "dividends", "splits"]


@dataclass
class Normalized:
    """Rows fit to store, how many were refused per symbol and reason, and symbols whose data was unusable."""

    frame: pd.DataFrame
    rejected: dict[str, dict[str, int]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def check_interval(interval: str) -> str:
    if interval not in INTERVALS:
        raise ValidationError("OhlcvPrice", "interval", f"{interval!r} is not one of {', '.join(INTERVALS)}")
    return interval


def empty_frame() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in COLUMNS})


def normalize(raw: pd.DataFrame, symbol: str, interval: str, source: str) -> Normalized:
    """One symbol's frame; raises ValueError when its data is unusable."""
    result = normalize_many({symbol: raw}, interval, source)
    if symbol in result.errors:
        raise ValueError(result.errors[symbol])
    return result


def normalize_many(raws: dict[str, pd.DataFrame], interval: str, source: str) -> Normalized:
    """Providers' frames (DatetimeIndex, OHLCV columns in any common spelling) in the shared shape, in one pass."""
    columns: dict[str, list[np.ndarray]] = {c: [] for c in ["symbol", "ts", *VALUES]}
    errors: dict[str, str] = {}
    for symbol, raw in raws.items():  # plain arrays per symbol: pandas calls cost ~1 ms each, x 500 symbols
        names = {ALIASES.get(re.sub(r"[\s_]", "", str(c).lower())): c for c in raw.columns}
        missing = [c for c in PRICES if c not in names]
        if missing:
            errors[symbol] = (f"{symbol}: the {source} data has no {', '.join(missing)} column(s); "
                              f"got {', '.join(map(str, raw.columns))}")
            continue
        index = pd.DatetimeIndex(raw.index)
        index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
        columns["ts"].append(index.tz_localize(None).to_numpy(dtype="datetime64[us]"))
        columns["symbol"].append(np.full(len(raw), symbol, dtype=object))
        for c in VALUES:
            columns[c].append(_floats(raw[names[c]]) if c in names else np.full(len(raw), np.nan))
    if not columns["ts"]:
        return Normalized(empty_frame(), {}, errors)
    frame = pd.DataFrame({"interval": interval, **{c: np.concatenate(parts) for c, parts in columns.items()},
                          "source": source})
    frame[["volume", "dividends", "splits"]] = frame[["volume", "dividends", "splits"]].fillna(0.0)
    reasons = {
        "NaN price": frame[PRICES].isna().any(axis=1),
        "negative volume": frame["volume"] < 0,
        "high below low": frame["high"] < frame["low"],
    }
    rejected: dict[str, dict[str, int]] = {}
    bad = pd.Series(False, index=frame.index)
    for reason, mask in reasons.items():
        mask = mask & ~bad  # each row counted once, under its first reason
        for symbol, n in frame.loc[mask, "symbol"].value_counts().items():
            rejected.setdefault(str(symbol), {})[reason] = int(n)
        bad |= mask
    good = frame[~bad].drop_duplicates(subset=["symbol", "ts"], keep="last").sort_values(["symbol", "ts"])
    good = good.assign(volume=good["volume"].round().astype("int64")).reset_index(drop=True)[COLUMNS]
    return Normalized(good, rejected, errors)


def _floats(column: pd.Series) -> np.ndarray:
    """The column as floats; text that is no number becomes NaN (and its row is refused)."""
    values = column.to_numpy()
    if values.dtype.kind in "fiub":
        return values.astype("float64")
    return pd.to_numeric(column, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
