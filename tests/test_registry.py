"""The shipped registry and the public API: initialize_timber() and get_model()."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect

import timber_tasks
from timber_tasks import ModelNotFoundError, TimberError, get_model, initialize_timber

from .conftest import ROOT

SHIPPED = ROOT / "model_configs"


def test_the_shipped_models_load_and_create_their_tables(database_url: str) -> None:
    timber = initialize_timber(app_name="grove", model_config_dirs=[SHIPPED], database_url=database_url)
    expected = {"User", "Session", "StockResearchSession", "ResearchData", "Notification",
                "TrackedEvent", "OhlcvPrice", "TradingSession", "Order", "ResearchSession",
                "ResearchReport"}
    assert expected <= set(timber.registry.names())
    tables = set(inspect(timber.db.engine).get_table_names())
    assert {"users", "sessions", "ohlcv_prices", "orders", "research_reports"} <= tables


def test_get_model_returns_the_mapped_class_that_reads_and_writes(database_url: str) -> None:
    timber = initialize_timber(model_config_dirs=[SHIPPED], database_url=database_url)
    User = get_model("User")
    assert User.__tablename__ == "users"
    with timber.db.session_scope() as s:
        s.add(User(email="ada@example.com", username="ada"))
    with timber.db.session_scope() as s:
        user = s.query(User).one()
        assert user.username == "ada" and len(user.id) == 36 and user.created_at is not None


def test_an_unknown_model_name_is_a_lookup_error_that_lists_close_matches(tmp_path: Path) -> None:
    initialize_timber(model_config_dirs=[SHIPPED], database_url=f"sqlite:///{tmp_path}/t.db")
    with pytest.raises(ModelNotFoundError) as info:
        get_model("Usr")
    assert isinstance(info.value, LookupError) and isinstance(info.value, TimberError)
    assert "User" in info.value.suggestions and "Did you mean: User" in str(info.value)


def test_get_model_before_initialize_says_what_to_call() -> None:
    with pytest.raises(TimberError, match="initialize_timber"):
        get_model("User")


def test_settings_come_from_arguments_then_environment_then_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIMBER_APP_NAME", "canopy")
    monkeypatch.setenv("TIMBER_MODEL_CONFIG_DIRS", str(SHIPPED))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/env.db")
    timber = initialize_timber()
    assert timber.app_name == "canopy" and timber.db.url.endswith("env.db")
    timber = initialize_timber(app_name="grove", database_url=f"sqlite:///{tmp_path}/arg.db")
    assert timber.app_name == "grove" and timber.db.url.endswith("arg.db")


def test_the_embedded_default_is_an_sqlite_file_in_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    timber = initialize_timber(model_config_dirs=[SHIPPED])
    assert timber.db.dialect == "sqlite"
    assert (tmp_path / "var" / "timber.db").exists()


def test_settings_repr_masks_passwords_and_keys() -> None:
    settings = timber_tasks.Settings.load(
        env={}, database_url="postgresql://u:hunter2@db/x", redis_url="redis://:sekrit@r:6379/0",
        encryption_keys="k1,k2",
    )
    shown = repr(settings)
    assert "hunter2" not in shown and "sekrit" not in shown and "k1" not in shown
    assert "<2 key(s)>" in shown
