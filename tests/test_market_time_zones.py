"""A start/end with or without a time zone means one UTC moment, at every entry point (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from timber_tasks import initialize_timber
from timber_tasks.market_data import ingest
from timber_tasks.market_data.providers.file import FileProvider

from .conftest import ROOT
from .market_helpers import bars, stored, write

PLUS_FIVE = timezone(timedelta(hours=5))


def _timber(database_url: str) -> Any:
    return initialize_timber(model_config_dirs=[ROOT / "model_configs"], database_url=database_url)


@pytest.mark.parametrize(("start", "end"), [
    (datetime(2024, 1, 3, 5, tzinfo=PLUS_FIVE), datetime(2024, 1, 5, 19, tzinfo=timezone(timedelta(hours=-5)))),
    ("2024-01-03T00:00:00Z", "2024-01-06T05:00:00+05:00"),
    (datetime(2024, 1, 3), "2024-01-06"),  # naive: already UTC
], ids=["aware-datetimes", "iso-with-offsets", "naive"])
def test_fetch_and_store_reads_bounds_with_any_offset_as_the_same_utc_window(
        database_url: str, tmp_path: Path, start: Any, end: Any) -> None:
    files = tmp_path / "prices"
    write(files, "ZONE", bars())  # daily bars at 00:00 UTC, Jan 1..10
    timber = _timber(database_url)
    result = ingest.fetch_and_store(timber, ["ZONE"], start=start, end=end, provider=FileProvider(files))
    assert result["ZONE"] == {"status": "ok", "written": 3, "skipped": 0, "rejected": {}, "error": None}
    assert sorted(stored(timber, "ZONE")) == [datetime(2024, 1, d) for d in (3, 4, 5)]
    Watermark = timber.get_model("MarketDataWatermark")
    with timber.db.session_scope() as session:
        assert session.get(Watermark, ("ZONE", "1d")).watermark == datetime(2024, 1, 5)


def test_every_spelling_of_a_moment_becomes_naive_utc() -> None:
    from timber_tasks.market_data.normalize import as_utc

    moment = datetime(2024, 1, 1)
    spellings = ["2024-01-01", "2024-01-01T00:00:00Z", "2024-01-01T05:30:00+05:30", "2023-12-31T19:00:00-05:00",
                 moment, moment.replace(tzinfo=UTC), datetime(2024, 1, 1, 5, tzinfo=PLUS_FIVE), date(2024, 1, 1)]
    assert [as_utc(s) for s in spellings] == [moment] * len(spellings)
    assert as_utc(None) is None and as_utc("") is None


def test_a_start_that_is_no_date_is_a_validation_error_naming_the_field() -> None:
    from timber_tasks.errors import ValidationError
    from timber_tasks.market_data.normalize import as_utc

    with pytest.raises(ValidationError, match=r"OhlcvPrice\.end: '1st of May' is not a date"):
        as_utc("1st of May", "end")


def test_the_file_provider_called_directly_takes_aware_bounds(tmp_path: Path) -> None:
    files = tmp_path / "prices"
    write(files, "ZONE", bars())
    answer = FileProvider(files).fetch(["ZONE"], datetime(2024, 1, 3, 5, tzinfo=PLUS_FIVE),
                                       datetime(2024, 1, 6, tzinfo=UTC), "1d")
    assert list(answer.frames["ZONE"].index.day) == [3, 4, 5]

