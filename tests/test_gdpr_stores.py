"""The list of personal-data stores is complete: a store, table, model or backend it lacks fails here."""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from timber_tasks import gdpr, initialize_timber
from timber_tasks.gdpr import stores
from timber_tasks.gdpr.stores import NOT_A_STORE, SETTINGS_STORES, STORE_TYPES, PersonalDataStore, unclaimed_models
from timber_tasks.gdpr.stores.results import CeleryResultStore
from timber_tasks.gdpr.tables import NO_PERSONAL_DATA
from timber_tasks.jobs.tables import system_metadata
from timber_tasks.settings import Settings

from .conftest import ROOT


def test_every_platform_table_is_claimed_by_a_store_or_declared_free_of_personal_data() -> None:
    claimed = {table for store in STORE_TYPES for table in store.claims_tables}
    tables = set(system_metadata.tables)
    assert tables - claimed - set(NO_PERSONAL_DATA) == set()
    assert claimed | set(NO_PERSONAL_DATA) <= tables  # no claim for a table that is gone


def test_every_model_with_user_data_in_the_shipped_registry_is_claimed(tmp_path: Path) -> None:
    timber = initialize_timber(model_config_dirs=[ROOT / "model_configs"], database_url=f"sqlite:///{tmp_path}/t.db",
                               create_tables=False)
    assert unclaimed_models(timber.registry) == []
    assert {m.timber_spec.name for m in timber.registry.with_feature("gdpr")} >= {"User", "Order", "ResearchReport"}


def test_a_model_pointing_at_a_subjects_rows_without_a_gdpr_block_is_unclaimed(
        tmp_path: Path, write_models: Callable[..., Path]) -> None:
    folder = write_models({"m.yaml": """
        version: "1"
        models:
          - name: Account
            table_name: accounts
            gdpr: {enabled: true, user_id_field: id}
            columns: [{name: id, type: String(36), primary_key: true}]
          - name: Card
            table_name: cards
            columns:
              - {name: id, type: Integer, primary_key: true}
              - {name: account_id, type: String(36), foreign_key: accounts.id}
          - name: Charge
            table_name: charges
            columns:
              - {name: id, type: Integer, primary_key: true}
              - {name: card_id, type: Integer, foreign_key: cards.id}
    """})
    timber = initialize_timber(model_config_dirs=[folder], database_url=f"sqlite:///{tmp_path}/t.db",
                               create_tables=False)
    assert unclaimed_models(timber.registry) == ["Card", "Charge"]


def test_every_store_class_in_the_package_is_in_the_store_list() -> None:
    for module in pkgutil.iter_modules(stores.__path__):
        importlib.import_module(f"{stores.__name__}.{module.name}")
    found: set[type[PersonalDataStore]] = set()
    pending = list(PersonalDataStore.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if not getattr(cls, "__abstractmethods__", None) and hasattr(cls, "name"):
            found.add(cls)
    assert found and found <= set(STORE_TYPES)


def test_every_store_that_settings_can_point_at_is_covered() -> None:
    urls = {name for name in Settings.model_fields if name.endswith("_url")}
    assert urls == set(SETTINGS_STORES) | set(NOT_A_STORE)
    assert set(SETTINGS_STORES.values()) <= {store.name for store in STORE_TYPES}


class _Settings:
    def __init__(self, url: str) -> None:
        self.resolved_result_backend_url = url


class _Timber:
    def __init__(self, url: str) -> None:
        self.settings = _Settings(url)


@pytest.mark.parametrize("url", [Settings().resolved_result_backend_url, "db+postgresql://h/db", "redis://h:6379/1",
                                 "rediss://h:6380/0"], ids=["embedded-default", "sql", "redis", "rediss"])
def test_every_result_backend_the_platform_runs_on_is_read_by_the_results_store(url: str) -> None:
    assert CeleryResultStore(_Timber(url)).url == url


@pytest.mark.parametrize("url", ["rpc://", "cache+memcached://h:11211/", "s3://bucket"])
def test_a_result_backend_no_store_reads_stops_gdpr_work_naming_it(url: str) -> None:
    with pytest.raises(gdpr.GdprError, match=re.escape(url.split("://")[0])):
        CeleryResultStore(_Timber(url))


def test_a_subject_is_found_in_a_payload_by_text_or_under_a_user_id_key_never_by_a_stray_number(
        tmp_path: Path) -> None:
    timber = initialize_timber(model_config_dirs=[ROOT / "model_configs"], database_url=f"sqlite:///{tmp_path}/t.db",
                               create_tables=False)
    numeric = gdpr.Subject.of(timber, 7)
    assert numeric.held_in({"record": {"user_id": 7}}) and numeric.held_in(["x", "7"])
    assert not numeric.held_in({"quantity": 7, "id": 7, "flag": True})
    assert numeric.named_in("create:7") and not numeric.named_in("order 17 of 70")
    # Ids are made of letters, digits and _ . -: "u1" is not in another person's "u1-2" or "u1.b".
    u1 = gdpr.Subject.of(timber, "u1")
    assert u1.named_in("welcome:u1") and u1.named_in("user u1 refused") and u1.named_in("u1@example.com")
    assert not any(u1.named_in(t) for t in ("order-u1-2-aapl", "user u1-2 refused", "u1.b", "u1_b", "xu1"))
    assert gdpr.Subject.of(timber, " u2").user_id == " u2"  # exactly as stored: " u2" is not "u2"
    assert "user_id" in numeric.id_keys and "id" not in numeric.id_keys  # User.id is a primary key


@pytest.mark.parametrize("backend", ["local", "redis"])
def test_every_shared_cache_backend_lists_and_drops_entries_by_prefix(backend: str,
                                                                      request: pytest.FixtureRequest) -> None:
    from timber_tasks.stores.cache import open_shared_cache

    shared = open_shared_cache("local://" if backend == "local" else request.getfixturevalue("redis_url"))
    try:
        shared.write("ns:data:User:user:a*b", '{"r": 1}', 60)  # a glob character in a key is matched literally
        shared.write("ns:data:User:user:c", '{"r": 2}', 60)
        shared.write("ns:data:Other:x", '{"r": 3}', 60)
        found = dict(shared.scan("ns:data:User:user:a*"))
        assert list(found) == ["ns:data:User:user:a*b"]
        assert {k for k, _ in shared.scan("ns:data:User:")} == {"ns:data:User:user:a*b", "ns:data:User:user:c"}
        shared.delete(["ns:data:User:user:a*b", "ns:data:User:user:c"])
        assert list(shared.scan("ns:data:User:")) == [] and len(list(shared.scan("ns:data:"))) == 1
    finally:
        shared.close()
