"""Yahoo Finance through yfinance: one multi-ticker `download`, raw and adjusted close both kept."""

from __future__ import annotations

import ast
import logging
import threading
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from timber_tasks.market_data.providers.base import Provider, ProviderResult

PRICE_COLUMNS = ["Open", "High", "Low", "Close"]
RATE_LIMIT_MARKERS = ("YFRateLimitError", "Too Many Requests", "Rate limited")
_download_lock = threading.Lock()  # the error capture listens on yfinance's one logger


class _ErrorCapture(logging.Handler):
    """yfinance's download() logs each failed ticker ("['SYM', ...]: reason") instead of raising."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.errors: dict[str, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        head, sep, reason = message.partition("]: ")
        if not sep or not head.startswith("["):
            return
        try:
            symbols = ast.literal_eval(head + "]")
        except (ValueError, SyntaxError):
            return
        for symbol in symbols:
            self.errors[str(symbol)] = reason.strip()


class YFinanceProvider(Provider):
    """`session` (a curl_cffi or requests Session) is yfinance's own: tests answer its requests."""

    name = "yfinance"

    def __init__(self, session: Any = None, timeout: float = 30, cache_dir: Path | str | None = None) -> None:
        import yfinance

        self.session = session
        self.timeout = timeout
        if cache_dir is not None:  # yfinance keeps ticker time zones in a small SQLite file
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
            yfinance.set_tz_cache_location(str(cache_dir))

    @classmethod
    def from_env(cls, data_dir: Path) -> YFinanceProvider:
        return cls(cache_dir=data_dir / "yfinance")  # not the home directory: workers may not have one

    def fetch(self, symbols: list[str], start: datetime, end: datetime | None, interval: str) -> ProviderResult:
        import yfinance

        # yfinance reads a naive start/end in the exchange's time zone (New York: 4-5 hours off); ours are UTC,
        # so hand it epoch seconds, which it takes as they are.
        first, stop = _epoch(start), _epoch(end) if end is not None else None
        capture = _ErrorCapture()
        logger = logging.getLogger("yfinance")
        with _download_lock, warnings.catch_warnings():
            # yfinance calls pandas APIs that pandas deprecates: its warnings, not ours to act on.
            warnings.filterwarnings("ignore", category=DeprecationWarning, module="yfinance")
            warnings.filterwarnings("ignore", category=FutureWarning, module="yfinance")
            logger.addHandler(capture)
            try:
                data = yfinance.download(
                    symbols, start=first, end=stop, interval=interval, auto_adjust=False, actions=True,
                    group_by="ticker", threads=False, progress=False, session=self.session,
                    timeout=self.timeout, multi_level_index=True)
            finally:
                logger.removeHandler(capture)
        result = ProviderResult()
        for symbol in symbols:
            error = capture.errors.get(symbol.upper())
            if error and any(marker in error for marker in RATE_LIMIT_MARKERS):
                result.rate_limited.append(symbol)
                continue
            frame = None
            if data is not None and symbol.upper() in data.columns.get_level_values(0):
                frame = data[symbol.upper()]
                # download() aligns every ticker on the union of dates: rows with no price at all are padding.
                frame = frame.dropna(how="all", subset=[c for c in PRICE_COLUMNS if c in frame.columns])
            if frame is None or frame.empty:
                result.errors[symbol] = error or "no bars in the requested range"
                continue
            if frame.index.tz is None:  # daily bars come back as exchange dates without a zone
                frame = frame.tz_localize("UTC")
            result.frames[symbol] = frame
        return result


def _epoch(moment: datetime) -> int:
    """Seconds since 1970 of a bound given naive (UTC) or with a zone."""
    from timber_tasks.market_data.normalize import as_utc

    return int((as_utc(moment) or moment).replace(tzinfo=UTC).timestamp())
