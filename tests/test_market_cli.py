"""`timber-tasks market fetch | status` as a user runs them, and the market-data beat entries."""

from __future__ import annotations

from pathlib import Path

from celery.schedules import crontab

from timber_tasks.celery_app import make_celery
from timber_tasks.settings import Settings

from .conftest import ROOT
from .market_helpers import bars, write
from .test_cli import run


def test_market_fetch_then_status_show_results_and_watermarks(tmp_path: Path) -> None:
    files = tmp_path / "prices"
    write(files, "CLIA", bars(days=4))
    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/cli.db", "TIMBER_MODEL_CONFIG_DIRS": str(ROOT / "model_configs"),
           "TIMBER_MARKET_DATA_PROVIDER": "file", "TIMBER_MARKET_DATA_FILES": str(files)}
    fetched = run("market", "fetch", "clia", "--start", "2023-12-01", "--interval", "1d", cwd=tmp_path, env=env)
    assert fetched.returncode == 0, fetched.stderr
    assert "CLIA" in fetched.stdout and "ok" in fetched.stdout and " 4 " in fetched.stdout
    failed = run("market", "fetch", "CLIA", "NOSUCH", "--start", "2023-12-01", cwd=tmp_path, env=env)
    assert failed.returncode == 1  # one symbol failed; the other was still fetched
    assert "NOSUCH" in failed.stdout and "no file" in failed.stdout
    status = run("market", "status", cwd=tmp_path, env=env)
    assert status.returncode == 0, status.stderr
    assert "2024-01-04" in status.stdout and "NOSUCH" in status.stdout and "2 symbol/interval pair(s)" in status.stdout
    bad = run("market", "fetch", "CLIA", "--interval", "7x", cwd=tmp_path, env=env)
    assert bad.returncode == 1 and "OhlcvPrice.interval: '7x' is not one of" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_beat_refreshes_the_watchlist_daily_and_intraday_then_warms_the_cache() -> None:
    app = make_celery(Settings.load(beat_schedule_file=ROOT / "beat_schedule.yaml"))
    daily, intraday = app.conf.beat_schedule["market-data-daily"], app.conf.beat_schedule["market-data-intraday"]
    for entry in (daily, intraday):
        assert entry["task"] == "timber.market_data.fetch_prices" and entry["kwargs"]["warm"] is True
        assert "AAPL" in entry["kwargs"]["symbols"] and isinstance(entry["schedule"], crontab)
    assert daily["kwargs"]["interval"] == "1d" and intraday["kwargs"]["interval"] == "5m"
    assert daily["schedule"].day_of_week == {1, 2, 3, 4, 5} and intraday["schedule"].day_of_week == {1, 2, 3, 4, 5}
    assert intraday["schedule"].minute == set(range(0, 60, 5))


def test_market_fetch_takes_a_start_with_a_time_zone(tmp_path: Path) -> None:
    files = tmp_path / "prices"
    write(files, "CLIZ", bars(days=4))  # Jan 1..4, 00:00 UTC
    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/cli.db", "TIMBER_MODEL_CONFIG_DIRS": str(ROOT / "model_configs"),
           "TIMBER_MARKET_DATA_PROVIDER": "file", "TIMBER_MARKET_DATA_FILES": str(files)}
    # 2024-01-02 05:00 at +05:00 is Jan 2, 00:00 UTC: three bars, ending before Jan 4 19:00 -05:00 (Jan 5 UTC)
    fetched = run("market", "fetch", "CLIZ", "--start", "2024-01-02T05:00:00+05:00",
                  "--end", "2024-01-04T19:00:00-05:00", cwd=tmp_path, env=env)
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    assert "CLIZ" in fetched.stdout and " ok " in fetched.stdout and " 3 " in fetched.stdout
    utc = run("market", "fetch", "CLIZ", "--start", "2024-01-01T00:00:00Z", cwd=tmp_path, env=env)
    assert utc.returncode == 0 and " 1 " in utc.stdout and " 3 " in utc.stdout  # Jan 1 new, the others unchanged
    bad = run("market", "fetch", "CLIZ", "--start", "soon", cwd=tmp_path, env=env)
    assert bad.returncode == 2 and "'soon' is not a date" in bad.stderr and "--start" in bad.stderr
