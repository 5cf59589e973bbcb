"""Market-data jobs: fetch prices for many symbols in batches of jobs, then optionally warm the cache.

pandas and yfinance load only when a market-data job runs (imports inside the jobs), not in every worker.
"""

from __future__ import annotations

from typing import Any

from celery import chord

from timber_tasks.jobs import outbox
from timber_tasks.tasks.base import TimberTask, get_timber, timber_task

BATCH_SIZE = 50  # symbols per job: one provider call and one transaction per CHUNK of them


def _symbols(symbols: list[str] | str) -> list[str]:
    items = symbols.replace(",", " ").split() if isinstance(symbols, str) else symbols
    return list(dict.fromkeys(s.strip().upper() for s in items if s.strip()))


@timber_task("timber.market_data.fetch_prices", base=TimberTask, bind=True)
def fetch_prices(self: TimberTask, symbols: list[str] | str, start: str | None = None, end: str | None = None,
                 interval: str = "1d", provider: str | None = None, batch_size: int = BATCH_SIZE,
                 warm: bool = False) -> Any:
    """fetch_prices.delay(["AAPL", ...], start="2024-01-01", interval="1d"): bigger lists fan out as a chord.

    start/end: ISO strings, with an offset ("2024-01-01T09:30:00-05:00", "...Z") or without (UTC).
    """
    from timber_tasks.market_data.normalize import as_utc, check_interval

    names = _symbols(symbols)
    check_interval(interval)
    as_utc(start, "start")  # a bad date fails this job at once, not each of its batches
    as_utc(end, "end")
    if len(names) <= batch_size:
        return merge_results([fetch_batch(names, start, end, interval, provider)], interval if warm else None)
    batches = [fetch_batch.s(names[i:i + batch_size], start, end, interval, provider)
               for i in range(0, len(names), batch_size)]
    if self.tracks_outbox:  # this job's part is done: the batches and the callback carry their own rows
        with get_timber().db.session_scope() as session:
            outbox.complete(session, self.request.id)
    # The chord's callback takes this job's id, so the caller's result.get() waits for the merged result.
    raise self.replace(chord(batches, merge_results.s(interval if warm else None)))


@timber_task("timber.market_data.fetch_batch", base=TimberTask)
def fetch_batch(symbols: list[str], start: str | None = None, end: str | None = None, interval: str = "1d",
                provider: str | None = None) -> dict[str, dict[str, Any]]:
    """One batch: {symbol: {status, written, skipped, rejected, error}}."""
    from timber_tasks.market_data import ingest

    return ingest.fetch_and_store(get_timber(), symbols, interval=interval, start=start, end=end, provider=provider)


@timber_task("timber.market_data.merge_results", base=TimberTask)
def merge_results(batches: list[dict[str, dict[str, Any]]], warm_interval: str | None = None) -> dict[str, Any]:
    """The batches' per-symbol results in one answer, with totals; warms the newest bars when asked."""
    from timber_tasks.market_data import ingest

    merged: dict[str, dict[str, Any]] = {}
    for batch in batches:
        merged.update(batch)
    answer: dict[str, Any] = {"symbols": merged, "totals": ingest.summarize(merged)}
    if warm_interval:
        answer["warmed"] = ingest.warm_latest(get_timber(), list(merged), warm_interval)
    return answer
