"""Incremental fetch: from each symbol's watermark minus a look-back window, normalised, upserted.

Per symbol the result says rows written (new or changed), skipped (already stored as is),
rejected (and why), or why the symbol failed; one symbol's failure never stops the others.
"""

from __future__ import annotations

import logging
import os
import random
import re
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
from sqlalchemy import exc as sa_exc

from timber_tasks.errors import ValidationError
from timber_tasks.jobs.faults import is_transient
from timber_tasks.market_data import store
from timber_tasks.market_data.normalize import as_utc, check_interval, normalize_many, rules_for
from timber_tasks.market_data.providers.base import Provider, get_provider
from timber_tasks.models.defaults import utcnow
from timber_tasks.stores.ratelimit import RateLimiter, rate_limiter

log = logging.getLogger("timber_tasks.market_data")

TICKER = re.compile(r"\^?[A-Z0-9][A-Z0-9.=-]*")  # AAPL, BRK-B, ^GSPC, EURUSD=X, BTC-USD
RATE_ENV, BURST_ENV = "TIMBER_MARKET_DATA_RATE", "TIMBER_MARKET_DATA_BURST"  # provider requests per second / saved up
CHUNK = 50  # symbols per provider call and per transaction
INTRADAY = timedelta(days=2)
# Late corrections (splits, dividends, revised bars) land within this window before the watermark.
LOOKBACK = {"1d": timedelta(days=7), "5d": timedelta(days=21), "1wk": timedelta(days=21),
            "1mo": timedelta(days=93), "3mo": timedelta(days=186)}
# With no watermark and no start: how far back a first fetch goes (Yahoo keeps 1m bars for ~8 days).
FIRST_FETCH = {"1m": timedelta(days=7), "1d": timedelta(days=365), "1wk": timedelta(days=5 * 365),
               "1mo": timedelta(days=10 * 365), "3mo": timedelta(days=10 * 365)}


@dataclass
class SymbolResult:
    """What one symbol's fetch did."""

    status: str = "ok"  # ok | partial (some rows rejected) | failed
    written: int = 0
    skipped: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    error: str | None = None


def lookback_for(interval: str) -> timedelta:
    return LOOKBACK.get(interval, INTRADAY)


def first_start(interval: str, now: datetime) -> datetime:
    return now - FIRST_FETCH.get(interval, timedelta(days=59))


def default_limiter(timber: Any, provider: str) -> RateLimiter:
    """One bucket per provider, shared by every worker (Redis) or every process of the host."""
    return rate_limiter(f"market-data-{provider}", float(os.environ.get(RATE_ENV) or 2),
                        float(os.environ.get(BURST_ENV) or 10),
                        redis_url=timber.settings.redis_url, data_dir=timber.settings.data_dir)


def fetch_and_store(timber: Any, symbols: list[str], *, interval: str = "1d", start: datetime | str | None = None,
                    end: datetime | str | None = None, provider: Provider | str | None = None,
                    limiter: RateLimiter | None = None, lookback: timedelta | None = None,
                    rate_limit_retries: int = 4, backoff: float = 1.0,
                    on_progress: Callable[[int], None] | None = None) -> dict[str, dict[str, Any]]:
    """Fetch, normalise and upsert; returns {symbol: SymbolResult as a dict}.

    start/end: datetimes or ISO strings; with an offset they are converted to UTC, without one they are UTC.
    """
    check_interval(interval)
    start, end = as_utc(start, "start"), as_utc(end, "end")
    symbols = list(dict.fromkeys(s.strip().upper() for s in symbols if s.strip()))
    results: dict[str, SymbolResult] = {}
    # A symbol the tables cannot hold fails alone, before any request (PostgreSQL would refuse its whole chunk).
    longest = timber.get_model(store.PRICE_MODEL).__table__.c.symbol.type.length
    for symbol in symbols:
        if longest and len(symbol) > longest:
            results[symbol] = SymbolResult("failed", error=f"longer than the {longest} characters of "
                                                            f"{store.PRICE_MODEL}.symbol")
        elif not TICKER.fullmatch(symbol):  # it also names a file of the file provider: no paths
            results[symbol] = SymbolResult("failed", error="not a ticker symbol (letters, digits and . - ^ =)")
    if not isinstance(provider, Provider):
        provider = get_provider(provider, data_dir=timber.settings.data_dir)
    limiter = limiter or default_limiter(timber, provider.name)
    Watermark = timber.get_model(store.WATERMARK_MODEL)
    with timber.db.session_scope() as session:
        marks = {s: (m.watermark, m.last_status) for s, m in
                 store.load_watermarks(session, Watermark, symbols, interval).items()}
    now = utcnow()
    groups: dict[datetime, list[str]] = defaultdict(list)
    for symbol in (s for s in symbols if s not in results):
        mark = marks.get(symbol, (None, None))[0]
        begin = start or (mark - (lookback or lookback_for(interval)) if mark else first_start(interval, now))
        groups[begin].append(symbol)
    for begin, members in sorted(groups.items()):
        for i in range(0, len(members), CHUNK):
            chunk = members[i:i + CHUNK]
            frames = _fetch(provider, limiter, chunk, begin, end, interval, results, rate_limit_retries, backoff)
            _store(timber, interval, provider.name, chunk, frames, results)
            if on_progress:
                on_progress(len(chunk))
    return {s: asdict(results[s]) for s in symbols}


def _fetch(provider: Provider, limiter: RateLimiter, symbols: list[str], start: datetime, end: datetime | None,
           interval: str, results: dict[str, SymbolResult], retries: int, backoff: float) -> dict[str, pd.DataFrame]:
    """Raw frames of the symbols that have some; failures go straight into `results`."""
    frames: dict[str, pd.DataFrame] = {}
    pending = symbols
    for attempt in range(retries + 1):
        for _ in range(provider.requests_for(pending)):
            limiter.acquire(1)
        try:
            answer = provider.fetch(pending, start, end, interval)
        except Exception as exc:  # the whole call failed: each of its symbols says why
            log.warning("%s fetch of %s failed: %s", provider.name, pending, exc)
            for symbol in pending:
                results[symbol] = SymbolResult("failed", error=f"{provider.name}: {type(exc).__name__}: {exc}")
            return frames
        frames.update(answer.frames)
        for symbol, error in answer.errors.items():
            results[symbol] = SymbolResult("failed", error=error)
        pending = answer.rate_limited
        if not pending:
            break
        if attempt < retries:  # the provider said "too many requests": back off, with jitter, and ask again
            delay = backoff * 2**attempt
            log.warning("%s rate-limited %s; retrying in %.1fs", provider.name, pending, delay)
            time.sleep(delay / 2 + random.uniform(0, delay / 2))
    for symbol in pending:
        results[symbol] = SymbolResult("failed", error=f"{provider.name} rate-limited it {retries + 1} times")
    return frames


# What a write of bad data raises: the driver's refusal, or the session's ValidationError naming the column.
REFUSED = (sa_exc.DataError, sa_exc.IntegrityError, ValidationError)


def _store(timber: Any, interval: str, source: str, symbols: list[str], frames: dict[str, pd.DataFrame],
           results: dict[str, SymbolResult]) -> None:
    """Normalise, then upsert the bars and the watermarks in one transaction.

    Should the database still refuse the chunk for its data (a constraint the checks here do not know),
    each symbol is written alone, so only the one whose rows are refused fails, with the database's reason.
    Transient faults (lost connection, deadlock) propagate: the job retries them.
    """
    Price = timber.get_model(store.PRICE_MODEL)
    normalized = normalize_many(frames, interval, source, rules_for(Price))
    frame = normalized.frame
    results.update({s: SymbolResult("failed", error=e) for s, e in normalized.errors.items()})
    kept = set(frame["symbol"].unique())
    for symbol in frames:
        if symbol in normalized.errors:
            continue
        rejected = normalized.rejected.get(symbol, {})
        if rejected and symbol not in kept:
            error = f"all {sum(rejected.values())} rows rejected"
            results[symbol] = SymbolResult("failed", rejected=rejected, error=error)
        else:  # no rows at all is fine: nothing new in the range
            results[symbol] = SymbolResult("partial" if rejected else "ok", rejected=rejected)
    try:
        _write(timber, interval, source, symbols, frame, results)
        return
    except REFUSED as exc:
        if is_transient(exc):
            raise
        chunk_error = exc

    def refuse(symbol: str, exc: Exception) -> None:
        log.warning("the database refused the bars of %s: %s", symbol, _reason(exc))
        before = results.get(symbol) or SymbolResult()
        results[symbol] = SymbolResult("failed", rejected=before.rejected,
                                       error=f"the database refused its bars: {_reason(exc)}")
        try:
            _write(timber, interval, source, [symbol], frame.iloc[0:0], results)  # its watermark says so
        except REFUSED as again:
            if is_transient(again):
                raise
            log.warning("the watermark of %s cannot be saved either: %s", symbol, _reason(again))

    if len(symbols) == 1:
        refuse(symbols[0], chunk_error)
        return
    log.warning("storing %d symbols failed (%s); storing them one at a time", len(symbols), _reason(chunk_error))
    parts = dict(tuple(frame.groupby("symbol")))
    for symbol in symbols:
        try:
            _write(timber, interval, source, [symbol], parts.get(symbol, frame.iloc[0:0]), results)
        except REFUSED as exc:
            if is_transient(exc):
                raise
            refuse(symbol, exc)


def _write(timber: Any, interval: str, source: str, symbols: list[str], frame: pd.DataFrame,
           results: dict[str, SymbolResult]) -> None:
    """One transaction: these symbols' bars, and their watermarks (moved to their newest bar)."""
    Price, Watermark = timber.get_model(store.PRICE_MODEL), timber.get_model(store.WATERMARK_MODEL)
    good = not frame.empty
    newest = {str(s): ts.to_pydatetime() for s, ts in frame.groupby("symbol")["ts"].max().items()} if good else {}
    with timber.db.session_scope() as session:
        upserted = store.upsert_prices(session, Price, frame) if good else store.Upserted()
        fetched = frame.groupby("symbol").size().to_dict() if good else {}
        now = utcnow()
        rows = []
        for symbol in symbols:
            result = results.setdefault(symbol, SymbolResult("failed", error="the provider returned nothing"))
            result.written = int(upserted.written.get(symbol, 0))
            result.skipped = int(fetched.get(symbol, 0)) - result.written
            rows.append({"symbol": symbol, "interval": interval, "watermark": newest.get(symbol), "last_run_at": now,
                         "last_status": result.status, "last_written": result.written,
                         "last_skipped": result.skipped, "last_rejected": sum(result.rejected.values()),
                         "last_error": result.error, "source": source})
        store.save_watermarks(session, Watermark, rows)
        store.declare_writes(session, Price, upserted)


def _reason(exc: Exception) -> str:
    """The driver's error class and first line, e.g. "CheckViolation: new row ... violates check constraint"."""
    if isinstance(exc, ValidationError) and isinstance(exc.__cause__, sa_exc.DBAPIError):
        exc = exc.__cause__  # the session named the column; the driver's words say why
    orig = getattr(exc, "orig", None) or exc
    return f"{type(orig).__name__}: {str(orig).strip().splitlines()[0] if str(orig).strip() else ''}"


def warm_latest(timber: Any, symbols: list[str], interval: str) -> int:
    """Load each symbol's newest bar into the cache (L1 here, and Redis for every worker); returns how many."""
    from timber_tasks.features.cache import warm_cache

    Price = timber.get_model(store.PRICE_MODEL)
    with timber.db.session_scope() as session:
        keys = store.latest_keys(session, Price, [s.upper() for s in symbols], interval)
    return warm_cache(timber, store.PRICE_MODEL, keys)


def summarize(results: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Totals over symbols: rows written and skipped, symbols failed."""
    return {"symbols": len(results), "written": sum(r["written"] for r in results.values()),
            "skipped": sum(r["skipped"] for r in results.values()),
            "failed": sum(r["status"] == "failed" for r in results.values())}
