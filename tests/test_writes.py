"""Every write path x every promise: cache fresh, hashes current, lookups exact, validators run.

Write paths: ORM unit of work, ORM bulk insert/update/delete, the persistence jobs'
batch create/update and upsert (Core), deletes the database cascades, and savepoints.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, insert, select, text, update

from timber_tasks import initialize_timber
from timber_tasks.errors import ModelConfigErrors, ValidationError
from timber_tasks.features import writes
from timber_tasks.features.cache import get_cached
from timber_tasks.features.encryption import lookup_clause
from timber_tasks.jobs.persistence import persist
from timber_tasks.models.types import register_type

BOOKS = """
version: "1"
models:
  - name: Account
    table_name: accounts
    polymorphic: {on: kind}
    caching: {enabled: true, ttl_seconds: 60}
    encryption: {enabled: true, fields: [iban, analysis], searchable: [iban]}
    columns:
      - {name: id, type: Integer, primary_key: true}
      - {name: kind, type: String(20), default: Account}
      - {name: name, type: String(50)}
      - {name: iban, type: String(40), validators: [{type: regex, pattern: "^[A-Z]"}]}
      - {name: analysis, type: Text}
      - {name: contact, type: String(80), validators: [{type: email}]}
  - name: Premium
    inherits: Account
    polymorphic_identity: premium
    columns:
      - {name: tier, type: String(10)}
  - name: Holding
    table_name: holdings
    caching: {enabled: true, ttl_seconds: 60}
    columns:
      - {name: id, type: Integer, primary_key: true}
      - {name: symbol, type: String(10)}
      - {name: account_id, type: Integer, foreign_key: accounts.id, ondelete: CASCADE}
"""


@pytest.fixture
def books_dir(write_models: Callable[..., Path]) -> Path:
    return write_models({"books.yaml": BOOKS})


@pytest.fixture(params=["sqlite", "postgresql+redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    if request.param == "sqlite":
        return {"database_url": f"sqlite:///{tmp_path / 'writes.db'}"}
    return {"database_url": request.getfixturevalue("postgres_url"),
            "redis_url": request.getfixturevalue("redis_url")}


@pytest.fixture
def timber(backend: dict[str, Any], books_dir: Path) -> Any:
    return initialize_timber(model_config_dirs=[books_dir], **backend)


def _seed(timber: Any, *ids: int) -> None:
    Account = timber.get_model("Account")
    with timber.db.session_scope() as s:
        s.add_all([Account(id=i, name=f"acct {i}", iban=f"DE{i:04d}", analysis=f"plan {i}") for i in ids])
    for i in ids:
        assert get_cached(timber, "Account", i)["name"] == f"acct {i}"  # now in the cache


def _found(timber: Any, iban: str) -> set[int]:
    Account = timber.get_model("Account")
    with timber.db.session_scope() as s:
        return set(s.scalars(select(Account.id).where(lookup_clause(Account, "iban", iban))))


# -- the persistence jobs' paths (findings 1, 3, 4) ----------------------------------------


def test_an_upsert_job_leaves_no_stale_row_in_the_cache_and_writes_the_hash(timber: Any) -> None:
    _seed(timber, 1)
    persist(timber, "Account", "upsert", [{"id": 1, "name": "upserted", "iban": "DE-NEW"},
                                          {"id": 2, "name": "fresh", "iban": "DE-TWO"}], idempotency_key="u1")
    assert get_cached(timber, "Account", 1)["name"] == "upserted"
    assert get_cached(timber, "Account", 2)["iban"] == "DE-TWO"
    assert _found(timber, "DE-NEW") == {1} and _found(timber, "DE-TWO") == {2}
    assert _found(timber, "DE0001") == set()
    persist(timber, "Account", "upsert", {"id": 1, "name": "single", "iban": "DE-ONE"}, idempotency_key="u2")
    assert get_cached(timber, "Account", 1)["name"] == "single"
    assert _found(timber, "DE-ONE") == {1}


def test_a_batch_create_writes_the_hash_so_lookups_find_the_rows(timber: Any) -> None:
    persist(timber, "Account", "create", [{"id": i, "iban": f"DE{i}"} for i in (1, 2, 3)], idempotency_key="c")
    assert {i: _found(timber, f"DE{i}") for i in (1, 2, 3)} == {1: {1}, 2: {2}, 3: {3}}


def test_a_batch_update_rewrites_the_hash_and_invalidates_each_row(timber: Any) -> None:
    _seed(timber, 1, 2)
    persist(timber, "Account", "update", [{"id": 1, "iban": "DE-MOVED"}, {"id": 2, "name": "two"}],
            idempotency_key="u")
    assert _found(timber, "DE-MOVED") == {1} and _found(timber, "DE0001") == set()
    assert _found(timber, "DE0002") == {2}  # a row that did not change its iban keeps its hash
    assert get_cached(timber, "Account", 1)["iban"] == "DE-MOVED"
    assert get_cached(timber, "Account", 2)["name"] == "two"


def test_a_batch_delete_job_invalidates_the_rows_the_database_cascaded(timber: Any) -> None:
    _seed(timber, 1)
    Holding = timber.get_model("Holding")
    with timber.db.session_scope() as s:
        s.add(Holding(id=7, symbol="ACME", account_id=1))
    assert get_cached(timber, Holding, 7)["symbol"] == "ACME"
    persist(timber, "Account", "delete", [{"id": 1}], idempotency_key="d")
    assert get_cached(timber, "Account", 1) is None
    assert get_cached(timber, Holding, 7) is None


def test_batch_jobs_run_the_validators(timber: Any) -> None:
    with pytest.raises(ValidationError, match="contact"):
        persist(timber, "Account", "upsert", [{"id": 1, "contact": "not-an-email"}], idempotency_key="v")


# -- plain ORM and Core paths -------------------------------------------------------------


def test_orm_bulk_insert_update_and_delete_keep_hashes_validators_and_cache(timber: Any) -> None:
    Account = timber.get_model("Account")
    with timber.db.session_scope() as s:
        s.execute(insert(Account), [{"id": 1, "name": "a", "iban": "X1"}, {"id": 2, "name": "b", "iban": "X2"}])
    assert _found(timber, "X1") == {1}
    assert get_cached(timber, Account, 1)["name"] == "a"
    with timber.db.session_scope() as s:
        s.execute(update(Account), [{"id": 1, "iban": "Y1", "name": "a2"}])
    assert _found(timber, "Y1") == {1} and _found(timber, "X1") == set()
    assert get_cached(timber, Account, 1)["name"] == "a2"
    with pytest.raises(ValidationError, match="contact"), timber.db.session_scope() as s:
        s.execute(insert(Account), [{"id": 3, "contact": "nope"}])
    with timber.db.session_scope() as s:
        s.execute(delete(Account).where(Account.id == 2))
    assert get_cached(timber, Account, 2) is None


def test_a_rolled_back_savepoint_drops_only_its_own_invalidations(timber: Any) -> None:
    _seed(timber, 1, 2)
    Account = timber.get_model("Account")
    with timber.db.session_scope() as s:
        s.get(Account, 1).name = "kept"
        s.flush()
        with pytest.raises(RuntimeError), s.begin_nested():
            s.get(Account, 2).name = "rolled back"
            s.flush()
            raise RuntimeError
    assert get_cached(timber, Account, 1)["name"] == "kept"
    assert get_cached(timber, Account, 2)["name"] == "acct 2"


def test_hooks_see_each_committed_transaction_once_and_never_a_rolled_back_one(timber: Any) -> None:
    seen: list[writes.CommittedWrites] = []
    writes.on_commit(seen.append, name="test-recorder")
    try:
        Account = timber.get_model("Account")
        with timber.db.session_scope() as s:
            s.add(Account(id=5, name="five"))
        with pytest.raises(RuntimeError), timber.db.session_scope() as s:
            s.add(Account(id=6, name="six"))
            s.flush()
            raise RuntimeError
        with timber.db.session_scope() as s:
            s.delete(s.get(Account, 5))
    finally:
        writes._commit_hooks.pop("test-recorder")
    assert [(c.app_name, c.by_model["Account"].written, c.by_model["Account"].deleted) for c in seen] == [
        (timber.app_name, frozenset({5}), frozenset()), (timber.app_name, frozenset(), frozenset({5}))]
    assert seen[1].by_model["Holding"].whole_model  # the database may have cascaded into holdings


# -- the paths a review found outside the step: released savepoints, statement values, connections ----


def test_a_released_savepoint_runs_no_hook_and_the_commit_after_it_leaves_no_stale_row(timber: Any) -> None:
    _seed(timber, 1, 2)
    Account = timber.get_model("Account")
    seen: list[writes.CommittedWrites] = []
    writes.on_commit(seen.append, name="test-recorder")
    try:
        with timber.db.session_scope() as s:
            s.get(Account, 1).name = "outer"
            s.flush()
            with s.begin_nested():
                s.get(Account, 2).name = "inner"
            assert seen == []  # RELEASE SAVEPOINT is no commit
            # A reader between the release and the commit refills the cache with the committed rows ...
            assert get_cached(timber, Account, 2)["name"] == "acct 2"
    finally:
        writes._commit_hooks.pop("test-recorder")
    assert len(seen) == 1 and seen[0].by_model["Account"].written == {1, 2}
    # ... and the commit's invalidation comes after it, so the new rows are what is served.
    assert get_cached(timber, Account, 1)["name"] == "outer" and get_cached(timber, Account, 2)["name"] == "inner"


def test_values_given_in_the_statement_get_hashes_and_validators(timber: Any) -> None:
    _seed(timber, 3)
    Account = timber.get_model("Account")
    with timber.db.session_scope() as s:
        s.execute(update(Account).where(Account.id == 3).values(iban="NEW3"))
        s.execute(insert(Account).values(id=9, name="nine", iban="I9"))
    assert _found(timber, "NEW3") == {3} and _found(timber, "DE0003") == set() and _found(timber, "I9") == {9}
    assert get_cached(timber, Account, 3)["iban"] == "NEW3"
    with pytest.raises(ValidationError, match=r"Account\.contact"), timber.db.session_scope() as s:
        s.execute(update(Account).where(Account.id == 3).values(contact="not-an-email"))
    with pytest.raises(ValidationError, match=r"Account\.iban: is searchable"), timber.db.session_scope() as s:
        s.execute(update(Account).where(Account.id == 3).values(iban=Account.name))
    with pytest.raises(ValidationError, match=r"multi-row insert"), timber.db.session_scope() as s:
        s.execute(insert(Account).values([{"id": 20, "iban": "M20"}, {"id": 21, "iban": "M21"}]))


def test_core_statements_on_a_sessions_connection_keep_every_promise(timber: Any) -> None:
    _seed(timber, 4)
    table = timber.get_model("Account").__table__
    with timber.db.session_scope() as s:
        s.connection().execute(update(table).where(table.c.id == 4).values(name="via conn", iban="C4"))
    assert get_cached(timber, "Account", 4)["name"] == "via conn" and _found(timber, "C4") == {4}
    with pytest.raises(ValidationError, match="contact"), timber.db.session_scope() as s:
        s.connection().execute(insert(table), [{"id": 5, "contact": "nope"}])


def test_a_bare_connection_tells_the_hooks_after_its_commit_and_never_after_a_rollback(timber: Any) -> None:
    _seed(timber, 5, 6)
    table = timber.get_model("Account").__table__
    with timber.db.engine.begin() as conn:
        conn.execute(update(table).where(table.c.id == 5).values(name="engine", iban="E5"))
        with conn.begin_nested() as savepoint:
            conn.execute(update(table).where(table.c.id == 6).values(name="undone"))
            savepoint.rollback()
    assert get_cached(timber, "Account", 5)["name"] == "engine" and _found(timber, "E5") == {5}
    assert get_cached(timber, "Account", 6)["name"] == "acct 6"
    seen: list[writes.CommittedWrites] = []
    writes.on_commit(seen.append, name="test-recorder")
    try:
        with timber.db.engine.connect() as conn:
            conn.execute(insert(table), [{"id": 7, "name": "seven", "iban": "E7"}])
            conn.rollback()
            conn.execute(insert(table), [{"id": 8, "name": "eight", "iban": "E8"}])
            conn.commit()
            conn.execute(table.select())  # the next transaction begins: the commit before it is done
            assert [c.by_model["Account"].written for c in seen] == [{8}]
    finally:
        writes._commit_hooks.pop("test-recorder")
    assert _found(timber, "E8") == {8} and _found(timber, "E7") == set()


def test_raw_sql_text_invalidates_the_models_it_writes(timber: Any) -> None:
    _seed(timber, 7)
    with timber.db.session_scope() as s:
        s.execute(text("UPDATE accounts SET name = 'raw' WHERE id = 7"))
    assert get_cached(timber, "Account", 7)["name"] == "raw"
    with timber.db.engine.begin() as conn:
        conn.execute(text('UPDATE "accounts" SET name = :n WHERE id = 7'), {"n": "raw again"})
    assert get_cached(timber, "Account", 7)["name"] == "raw again"


def test_legacy_bulk_mappings_keep_hashes_validators_and_cache(timber: Any) -> None:
    _seed(timber, 1)
    Account = timber.get_model("Account")
    with timber.db.session_scope() as s:
        s.bulk_insert_mappings(Account, [{"id": 30, "name": "thirty", "iban": "B30"}])  # type: ignore[arg-type]
        s.bulk_update_mappings(Account, [{"id": 1, "name": "bulk", "iban": "B1"}])  # type: ignore[arg-type]
    assert _found(timber, "B30") == {30} and _found(timber, "B1") == {1} and _found(timber, "DE0001") == set()
    assert get_cached(timber, Account, 1)["name"] == "bulk"
    with pytest.raises(ValidationError, match="contact"), timber.db.session_scope() as s:
        s.bulk_insert_mappings(Account, [{"id": 31, "contact": "bad"}])  # type: ignore[arg-type]


def test_errors_about_an_encrypted_field_never_quote_its_value(timber: Any) -> None:
    # Error messages go to dead letters, outbox rows, results and logs: they must not carry the secret.
    Account, Premium = timber.get_model("Account"), timber.get_model("Premium")
    secret = "lower-secret-1"
    failures = []
    for attempt in (
        lambda: persist(timber, "Account", "create", {"id": 40, "iban": secret}, idempotency_key="leak-1"),
        lambda: persist(timber, "Account", "create", [{"id": 41, "iban": secret}], idempotency_key="leak-2"),
        lambda: persist(timber, "Account", "upsert", {"id": 42, "iban": {"nested": secret}}, idempotency_key="leak-3"),
        lambda: Account(id=43, iban=secret),
        lambda: Premium(id=44, iban=secret),
    ):
        with pytest.raises(ValidationError) as caught:
            attempt()
        failures.append(caught.value)
    assert all(f.field == "iban" and secret not in str(f) for f in failures), [str(f) for f in failures]
    # The validator's reason is kept, the value replaced (a wrong type is said without any value).
    assert [str(f).count("<encrypted value>") for f in failures] == [1, 1, 0, 1, 1], [str(f) for f in failures]
    with pytest.raises(ValidationError) as plain:  # a field that is not encrypted still says what was wrong
        persist(timber, "Account", "create", {"id": 45, "contact": "not-an-email"}, idempotency_key="leak-4")
    assert "not-an-email" in str(plain.value)


# -- inheritance (findings 6, 7) ------------------------------------------------------------


def test_a_child_model_keeps_its_parents_hashes_validators_and_cache(timber: Any) -> None:
    Premium = timber.get_model("Premium")
    with pytest.raises(ValidationError, match="contact"), timber.db.session_scope() as s:
        s.add(Premium(id=9, contact="not-an-email"))
    with pytest.raises(ValidationError, match="contact"):
        persist(timber, "Premium", "create", {"id": 9, "contact": "not-an-email"}, idempotency_key="p0")
    with timber.db.session_scope() as s:
        s.add(Premium(id=9, iban="PR-9", tier="gold"))
    persist(timber, "Premium", "create", [{"id": 10, "iban": "PR-10"}], idempotency_key="p1")
    assert _found(timber, "PR-9") == {9} and _found(timber, "PR-10") == {10}
    assert get_cached(timber, "Account", 9)["iban"] == "PR-9"
    with timber.db.session_scope() as s:
        s.get(Premium, 9).iban = "PR-99"
    assert get_cached(timber, "Account", 9)["iban"] == "PR-99"
    assert _found(timber, "PR-99") == {9}


def test_encryption_accepts_a_registered_string_type_and_checks_inherited_columns(
    write_models: Callable[..., Path], tmp_path: Path
) -> None:
    from sqlalchemy import String

    register_type("Iban", String(34))
    ok = write_models({"m.yaml": """
version: "1"
models:
  - name: Wallet
    table_name: wallets
    encryption: {enabled: true, fields: [iban], searchable: [iban]}
    columns:
      - {name: id, type: Integer, primary_key: true}
      - {name: iban, type: Iban}
"""})
    timber = initialize_timber(model_config_dirs=[ok], database_url=f"sqlite:///{tmp_path / 'w.db'}")
    assert timber.get_model("Wallet").__table__.c.iban.type.keyring is not None
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "m.yaml").write_text("""
version: "1"
models:
  - name: Base1
    table_name: base1
    polymorphic: {on: kind}
    columns:
      - {name: id, type: Integer, primary_key: true}
      - {name: kind, type: String(10)}
      - {name: score, type: Integer}
      - {name: note, type: Text}
  - name: Child1
    inherits: Base1
    polymorphic_identity: c
    encryption: {enabled: true, fields: [score, note]}
    columns:
      - {name: extra, type: Text}
""")
    with pytest.raises(ModelConfigErrors) as info:
        initialize_timber(model_config_dirs=[bad], database_url=f"sqlite:///{tmp_path / 'b.db'}")
    text = str(info.value)
    assert "Child1" in text and "'score'" in text and "'note'" in text and "inherits from Base1" in text


# -- another process -----------------------------------------------------------------------


def _reader(conn: Any, backend: dict[str, Any], models_dir: str) -> None:
    timber = initialize_timber(model_config_dirs=[models_dir], create_tables=False, **backend)
    conn.send(get_cached(timber, "Account", 1)["name"])
    conn.recv()
    conn.send(get_cached(timber, "Account", 1)["name"])


def test_an_upsert_job_in_one_process_is_never_served_stale_in_another(
    timber: Any, backend: dict[str, Any], books_dir: Path
) -> None:
    _seed(timber, 1)
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_reader, args=(child, backend, str(books_dir)))
    proc.start()
    try:
        assert parent.poll(60)
        assert parent.recv() == "acct 1"  # the other process now holds the row
        persist(timber, "Account", "upsert", [{"id": 1, "name": "upserted"}], idempotency_key="x")
        parent.send("committed")
        assert parent.poll(60)
        assert parent.recv() == "upserted"
    finally:
        proc.join(30)


def test_a_session_closed_without_commit_leaves_nothing_for_its_next_transaction(timber: Any) -> None:
    seen: list[writes.CommittedWrites] = []
    writes.on_commit(seen.append, name="test-recorder")
    try:
        Account = timber.get_model("Account")
        session = timber.db.session()
        session.add(Account(id=11, name="never committed"))
        session.flush()
        session.close()  # no commit, no explicit rollback
        session.add(Account(id=12, name="committed"))
        session.commit()
        session.close()
    finally:
        writes._commit_hooks.pop("test-recorder")
    assert [c.by_model["Account"].written for c in seen] == [frozenset({12})]
