"""Bars from files: <folder>/<interval>/<SYMBOL>.parquet or .csv (offline use, back-fills, the demo)."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import pandas as pd

from timber_tasks.market_data.normalize import as_utc
from timber_tasks.market_data.providers.base import FILES_ENV, Provider, ProviderResult

TIME_COLUMNS = ("timestamp", "datetime", "date", "ts", "time")


class FileProvider(Provider):
    """One file per symbol and interval; lines starting with '#' in a CSV are comments."""

    name = "file"

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)

    @classmethod
    def from_env(cls, data_dir: Path) -> FileProvider:
        return cls(os.environ.get(FILES_ENV) or data_dir / "market_data")

    def requests_for(self, symbols: list[str]) -> int:
        return 0  # local files: no provider to spare

    def path_for(self, symbol: str, interval: str) -> Path | None:
        for suffix in (".parquet", ".csv"):
            path = self.folder / interval / f"{symbol}{suffix}"
            if path.resolve().is_relative_to(self.folder.resolve()) and path.exists():  # never outside the folder
                return path
        return None

    def fetch(self, symbols: list[str], start: datetime, end: datetime | None, interval: str) -> ProviderResult:
        result = ProviderResult()
        for symbol in symbols:
            path = self.path_for(symbol, interval)
            if path is None:
                result.errors[symbol] = f"no file {self.folder / interval / symbol}.parquet or .csv"
                continue
            try:
                frame = read_bars(path)
            except (OSError, ValueError, KeyError) as exc:
                result.errors[symbol] = f"{path}: unreadable: {exc}"
                continue
            index = frame.index
            keep = index >= _utc(start)
            if end is not None:
                keep &= index < _utc(end)
            result.frames[symbol] = frame[keep]
        return result


def _utc(moment: datetime) -> pd.Timestamp:
    """A bound as an aware UTC timestamp, whether it came naive (UTC) or with any zone."""
    return pd.Timestamp(as_utc(moment) or moment, tz="UTC")


def read_bars(path: Path) -> pd.DataFrame:
    """The file as a frame indexed by UTC timestamps (naive times are taken as UTC)."""
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, comment="#")
    lower = {str(c).lower(): c for c in frame.columns}
    time_column = next((lower[c] for c in TIME_COLUMNS if c in lower), None)
    if time_column is not None:
        frame = frame.set_index(time_column)
    elif not isinstance(frame.index, pd.DatetimeIndex):
        raise ValueError(f"no time column (one of {', '.join(TIME_COLUMNS)})")
    index = pd.to_datetime(frame.index, utc=True)
    return frame.set_axis(index, axis=0)
