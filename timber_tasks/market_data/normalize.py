"""One frame shape for every provider, and the rows it refuses (reported per symbol, never stored)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

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


@dataclass(frozen=True)
class Bound:
    """The values a column's type holds, after rounding to `scale` decimals: -limit < x < limit (Numeric),
    -limit <= x < limit (integers, two's complement)."""

    type_name: str
    limit: float
    scale: int
    integer: bool = False


@dataclass(frozen=True)
class ColumnRules:
    """What the price table accepts, read from its model: a bound per value column, the ones that may be NULL."""

    bounds: dict[str, Bound] = field(default_factory=dict)
    nullable: frozenset[str] = frozenset({"volume"})


def rules_for(model: Any) -> ColumnRules:
    """The bounds of the model's value columns, from their types (Numeric(p, s): |x| < 10^(p-s); integers: bits)."""
    table = model.__table__ if hasattr(model, "__table__") else model
    bounds: dict[str, Bound] = {}
    for name in VALUES:
        column_type = table.c[name].type
        if isinstance(column_type, sa.Numeric) and not isinstance(column_type, sa.Float) and column_type.precision:
            scale = column_type.scale or 0
            limit = 10.0 ** (column_type.precision - scale)
            bounds[name] = Bound(f"Numeric({column_type.precision}, {scale})", limit, scale)
        elif isinstance(column_type, sa.Integer):
            small = isinstance(column_type, sa.SmallInteger)
            bits = 64 if isinstance(column_type, sa.BigInteger) else 16 if small else 32
            bounds[name] = Bound(type(column_type).__name__, 2.0 ** (bits - 1), 0, integer=True)
    return ColumnRules(bounds, frozenset(name for name in VALUES if table.c[name].nullable))


def as_utc(value: datetime | date | str | None, name: str = "start") -> datetime | None:
    """Every entry point's start/end as one thing: naive UTC (how bars and watermarks are stored).

    An ISO string or a datetime; with an offset it is converted, without one it already means UTC.
    """
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError as exc:
            raise ValidationError("OhlcvPrice", name, f"{value!r} is not a date (YYYY-MM-DD or ISO date-time, "
                                                      "optionally with an offset such as Z or +02:00)") from exc
    elif not isinstance(value, datetime):
        if not isinstance(value, date):
            raise ValidationError("OhlcvPrice", name, f"{value!r} is not a date or date-time")
        value = datetime(value.year, value.month, value.day)
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


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


def normalize(raw: pd.DataFrame, symbol: str, interval: str, source: str,
              rules: ColumnRules | None = None) -> Normalized:
    """One symbol's frame; raises ValueError when its data is unusable."""
    result = normalize_many({symbol: raw}, interval, source, rules)
    if symbol in result.errors:
        raise ValueError(result.errors[symbol])
    return result


def normalize_many(raws: dict[str, pd.DataFrame], interval: str, source: str,
                   rules: ColumnRules | None = None) -> Normalized:
    """Providers' frames (DatetimeIndex, OHLCV columns in any common spelling) in the shared shape, in one pass.

    `rules` (see rules_for) refuse values the table's column types cannot hold: one such row must not fail
    the transaction of every symbol stored with it. Without rules only the type-free checks run.
    """
    rules = rules or ColumnRules()
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
    arrays = {c: np.concatenate(parts) for c, parts in columns.items()}
    frame = pd.DataFrame({"interval": interval, **arrays, "source": source})
    infinite = np.zeros(len(frame), dtype=bool)
    for c in VALUES:
        infinite |= np.isinf(arrays[c])
    # No dividend or split on a bar means none happened; a missing volume is unknown, not zero.
    frame[["dividends", "splits"]] = frame[["dividends", "splits"]].fillna(0.0)
    reasons = {
        "NaN price": frame[PRICES].isna().any(axis=1),
        "infinite value": pd.Series(infinite, index=frame.index),
        **_out_of_range(frame, rules),
        "missing volume": frame["volume"].isna() & ("volume" not in rules.nullable),
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
    good = good.assign(volume=good["volume"].round().astype("Int64")).reset_index(drop=True)[COLUMNS]
    return Normalized(good, rejected, errors)


def _out_of_range(frame: pd.DataFrame, rules: ColumnRules) -> dict[str, pd.Series]:
    """A refusal per bounded column, e.g. "close beyond Numeric(18, 6)", for finite values its type cannot hold."""
    masks = {}
    for name, bound in rules.bounds.items():
        values = frame[name].to_numpy()
        outside = np.zeros(len(values), dtype=bool)
        # Only values within one step of the limit can round onto it: round those alone (np.round is slow).
        near = np.flatnonzero(np.abs(values) >= bound.limit - 10.0 ** -bound.scale)
        if len(near):
            picked = values[near]
            rounded = np.round(picked, bound.scale)  # what the database would store: 999999999999.9999999 is 10^12
            low = rounded < -bound.limit if bound.integer else rounded <= -bound.limit
            outside[near] = np.isfinite(picked) & (low | (rounded >= bound.limit))
        masks[f"{name} beyond {bound.type_name}"] = pd.Series(outside, index=frame.index)
    return masks


def _floats(column: pd.Series) -> np.ndarray:
    """The column as floats; text that is no number becomes NaN (and its row is refused)."""
    values = column.to_numpy()
    if values.dtype.kind in "fiub":
        return values.astype("float64")
    return pd.to_numeric(column, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
