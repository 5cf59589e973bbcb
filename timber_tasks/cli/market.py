"""`timber-tasks market fetch | status`, and the demo's market-data step (sample data, file provider)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress
from rich.table import Table

from timber_tasks.cli.common import console, err_console, reported_errors

app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                  help="Market data: fetch prices into the database, show watermarks.")

Interval = Annotated[str, typer.Option("--interval", help="Bar size: 1d, 1h, 5m, 1wk, ...")]


def _date(value: str | None, name: str) -> datetime | None:
    """The option as naive UTC (with an offset converted, without one taken as UTC)."""
    from timber_tasks.errors import ValidationError
    from timber_tasks.market_data.normalize import as_utc

    try:
        return as_utc(value, name)
    except ValidationError as exc:
        raise typer.BadParameter(exc.message, param_hint=f"--{name}") from exc


@app.command("fetch")
def fetch(
    symbols: Annotated[list[str], typer.Argument(help="Ticker symbols, e.g. AAPL MSFT.")],
    start: Annotated[str | None, typer.Option(help="First bar, ISO date or date-time; no offset means UTC "
                                                   "(default: watermark minus the look-back).")] = None,
    end: Annotated[str | None, typer.Option(help="Stop before this time, as --start (default: now).")] = None,
    interval: Interval = "1d",
    provider: Annotated[str | None, typer.Option(help="yfinance or file (default TIMBER_MARKET_DATA_PROVIDER).")]
    = None,
) -> None:
    """Fetch and upsert bars in this process, with a progress bar; exit 1 if any symbol failed."""
    from timber_tasks.market_data import ingest
    from timber_tasks.runtime import initialize_timber

    first, stop = _date(start, "start"), _date(end, "end")
    with reported_errors():
        timber = initialize_timber()
        with Progress(console=err_console, transient=True) as progress:
            bar = progress.add_task("fetching", total=len(symbols))
            results = ingest.fetch_and_store(timber, symbols, interval=interval, start=first, end=stop,
                                             provider=provider, on_progress=lambda n: progress.advance(bar, n))
    show_results(results)
    if any(r["status"] == "failed" for r in results.values()):
        raise typer.Exit(1)


def show_results(results: dict[str, dict[str, Any]]) -> None:
    table = Table("symbol", "status", "written", "skipped", "rejected", "error")
    for symbol, r in results.items():
        rejected = ", ".join(f"{n} {why}" for why, n in r["rejected"].items())
        colour = {"ok": "green", "partial": "yellow"}.get(r["status"], "red")
        table.add_row(symbol, f"[{colour}]{r['status']}[/{colour}]", str(r["written"]), str(r["skipped"]),
                      rejected, r["error"] or "")
    console.print(table)


@app.command("status")
def status(interval: Annotated[str | None, typer.Option(help="Only this bar size.")] = None) -> None:
    """Watermarks and the last run of every symbol."""
    from sqlalchemy import select

    from timber_tasks.runtime import initialize_timber

    with reported_errors():
        timber = initialize_timber()
        Watermark = timber.get_model("MarketDataWatermark")
        stmt = select(Watermark).order_by(Watermark.symbol, Watermark.interval)
        if interval:
            stmt = stmt.where(Watermark.interval == interval)
        with timber.db.session_scope() as session:
            rows = list(session.execute(stmt).scalars())
            table = Table("symbol", "interval", "watermark", "last run (UTC)", "status", "written/skipped/rejected",
                          "source", "error")
            for m in rows:
                table.add_row(m.symbol, m.interval, _short(m.watermark), _short(m.last_run_at), m.last_status,
                              f"{m.last_written}/{m.last_skipped}/{m.last_rejected}", m.source or "",
                              m.last_error or "")
    console.print(table)
    console.print(f"{len(rows)} symbol/interval pair(s)")


def _short(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.date().isoformat() if moment.time() == datetime.min.time() else moment.isoformat(" ", "minutes")


# -- the demo's step ------------------------------------------------------------------------

SAMPLE_SYMBOLS = ["SMPL-A", "SMPL-B", "SMPL-C", "SMPL-BAD"]
SAMPLE_MISSING = "SMPL-NONE"  # no file: shows a failing symbol among good ones
SAMPLE_NOTE = "# SAMPLE DATA: synthetic prices made by `timber-tasks demo`; not real market data\n"


def write_sample(folder: Path, days: int = 30) -> Path:
    """Synthetic daily bars (a seeded random walk) as CSV files under folder/1d; SMPL-BAD has broken rows."""
    import numpy as np
    import pandas as pd

    target = folder / "1d"
    target.mkdir(parents=True, exist_ok=True)
    dates = pd.bdate_range("2024-01-02", periods=days)
    for n, symbol in enumerate(SAMPLE_SYMBOLS):
        rng = np.random.default_rng(n)
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, days)))
        bars = pd.DataFrame({"date": dates.strftime("%Y-%m-%d"), "open": close * 0.998, "high": close * 1.01,
                             "low": close * 0.99, "close": close, "adj_close": close,
                             "volume": rng.integers(1_000_000, 2_000_000, days)}).round(4)
        if symbol == "SMPL-BAD":  # rows a provider may send: refused and reported, not stored
            bars.loc[2, "high"] = bars.loc[2, "low"] - 1
            bars.loc[3, "volume"] = -5
        with (target / f"{symbol}.csv").open("w") as out:
            out.write(SAMPLE_NOTE)
            bars.to_csv(out, index=False)
    return target


def demo_step(celery_app: Any, timber: Any, wait_until: Callable[[Callable[[], Any], str], Any]) -> None:
    """Fetch sample bars with the file provider through the market_data queue, fanned out in batches."""
    from timber_tasks.market_data.providers.file import FileProvider

    folder = FileProvider.from_env(Path(timber.settings.data_dir)).folder
    write_sample(folder)
    console.print(f"[bold]Market data[/bold] (file provider, SAMPLE DATA written to {folder / '1d'}):")
    fetch = celery_app.tasks["timber.market_data.fetch_prices"]
    job = fetch.delay([*SAMPLE_SYMBOLS, SAMPLE_MISSING], start="2024-01-01", interval="1d", provider="file",
                      batch_size=2, warm=True)
    wait_until(job.ready, "the market-data jobs")  # says at once if the worker died
    result = job.get(timeout=10)
    show_results(result["symbols"])
    totals = result["totals"]
    console.print(f"{totals['written']} bar(s) written, {totals['skipped']} unchanged, {totals['failed']} symbol(s) "
                  f"failed, {result['warmed']} latest bar(s) cached; `timber-tasks market status` shows watermarks.")
