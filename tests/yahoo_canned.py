"""A curl_cffi Session that answers yfinance's HTTP requests with canned Yahoo chart JSON (no network).

yfinance itself runs unchanged: its cookie/crumb requests, its chart request parameters and its
parsing of the answer. Only the transport is replaced, at the session yfinance is given.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from curl_cffi.requests import Response, Session
from curl_cffi.requests.headers import Headers

DAY = 86_400
OPEN_OFFSET = 14 * 3600 + 1800  # Yahoo stamps a daily bar at the New York open, 14:30 UTC in winter
CHART = re.compile(r"/v8/finance/chart/([^/?]+)")


def daily_bars(start: str, days: int, base: float) -> list[dict[str, Any]]:
    first = int(datetime.fromisoformat(start).replace(tzinfo=UTC).timestamp()) + OPEN_OFFSET
    return [{"t": first + i * DAY, "open": base + i, "high": base + i + 2, "low": base + i - 2, "close": base + i + 1,
             "adjclose": base + i + 0.5, "volume": 1_000_000 + i} for i in range(days)]


def chart_json(symbol: str, bars: list[dict[str, Any]], dividends: dict[int, float] | None = None) -> dict[str, Any]:
    meta = {"currency": "USD", "symbol": symbol, "exchangeName": "NMS", "fullExchangeName": "NasdaqGS",
            "instrumentType": "EQUITY", "firstTradeDate": 345479400, "regularMarketTime": bars[-1]["t"] if bars else 0,
            "hasPrePostMarketData": True, "gmtoffset": -18000, "timezone": "EST",
            "exchangeTimezoneName": "America/New_York", "priceHint": 2, "dataGranularity": "1d", "range": "",
            "currentTradingPeriod": {
                "pre": {"timezone": "EST", "start": 0, "end": 0, "gmtoffset": -18000},
                "regular": {"timezone": "EST", "start": 0, "end": 0, "gmtoffset": -18000},
                "post": {"timezone": "EST", "start": 0, "end": 0, "gmtoffset": -18000}},
            "validRanges": ["1d", "5d", "1mo", "3mo", "6mo", "1y", "2y", "5y", "10y", "ytd", "max"]}
    result: dict[str, Any] = {
        "meta": meta,
        "timestamp": [b["t"] for b in bars],
        "indicators": {"quote": [{k: [b[k] for b in bars] for k in ("open", "high", "low", "close", "volume")}],
                       "adjclose": [{"adjclose": [b["adjclose"] for b in bars]}]},
    }
    if dividends:
        result["events"] = {"dividends": {str(t): {"amount": a, "date": t} for t, a in dividends.items()}}
    return {"chart": {"result": [result], "error": None}}


NOT_FOUND = {"chart": {"result": None, "error": {"code": "Not Found",
                                                 "description": "No data found, symbol may be delisted"}}}


QUOTE_NOT_FOUND = {"quoteSummary": {"result": None, "error": {"code": "Not Found",
                                                           "description": "Quote not found for symbol"}}}


class CannedYahoo(Session):  # type: ignore[type-arg]
    """symbols: {SYMBOL: bars}; a symbol not listed is delisted (404); rate_limit: {SYMBOL: how many 429s first}."""

    def __init__(self, symbols: dict[str, list[dict[str, Any]]], rate_limit: dict[str, int] | None = None,
                 dividends: dict[str, dict[int, float]] | None = None) -> None:
        super().__init__()
        self.symbols = symbols
        self.rate_limit = Counter(rate_limit or {})
        self.dividends = dividends or {}
        self.charts: list[tuple[str, dict[str, Any]]] = []  # (symbol, params) of every chart request
        self.urls: list[str] = []
        self.lock = threading.Lock()

    def request(self, method: str, url: str, params: dict[str, Any] | None = None, **_: Any) -> Response:  # type: ignore[override]
        if "fc.yahoo.com" in url:
            return _answer(url, 404, "")
        if "getcrumb" in url:
            return _answer(url, 200, "canned-crumb", "text/plain")
        self.urls.append(url)
        # Where yfinance looks for a time zone the chart did not give (a delisted symbol): nothing there either.
        if "/quoteSummary/" in url:
            return _answer(url, 404, json.dumps(QUOTE_NOT_FOUND))
        if "/v7/finance/quote" in url:
            return _answer(url, 200, json.dumps({"quoteResponse": {"result": [], "error": None}}))
        if "/timeseries/" in url:
            return _answer(url, 200, json.dumps({"timeseries": {"result": [], "error": None}}))
        match = CHART.search(url)
        if match is None:  # consent pages and anything else yfinance may try
            return _answer(url, 404, "")
        symbol = match.group(1).upper()
        with self.lock:
            self.charts.append((symbol, dict(params or {})))
            if self.rate_limit[symbol] > 0:
                self.rate_limit[symbol] -= 1
                return _answer(url, 429, "Too Many Requests", "text/plain")
        if symbol not in self.symbols:
            return _answer(url, 404, json.dumps(NOT_FOUND))
        bars = self.symbols[symbol]
        p = params or {}
        if "period1" in p:
            low, high = int(p["period1"]), int(p.get("period2") or 2**40)
            bars = [b for b in bars if low <= b["t"] < high]
        else:  # range=1d: what yfinance asks to learn the time zone
            bars = bars[-1:]
        events = {t: a for t, a in self.dividends.get(symbol, {}).items() if any(b["t"] == t for b in bars)}
        return _answer(url, 200, json.dumps(chart_json(symbol, bars, events)))


def _answer(url: str, status: int, body: str, content_type: str = "application/json") -> Response:
    response = Response()
    response.url = url
    response.status_code = status
    response.ok = status < 400
    response.reason = {200: "OK", 404: "Not Found", 429: "Too Many Requests"}.get(status, "")
    response.content = body.encode()
    response.headers = Headers({"Content-Type": content_type})
    return response
