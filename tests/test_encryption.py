"""Field encryption: ciphertext at rest, clear errors, keyed-hash lookups and key rotation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import insert, select, text

from timber_tasks import initialize_timber
from timber_tasks.errors import ConfigError, DecryptionError, ValidationError
from timber_tasks.features.encryption import lookup_clause, rotate_encryption_keys
from timber_tasks.models.records import validate_record

VAULT = """
version: "1"
models:
  - name: Vault
    table_name: vault
    encryption:
      enabled: true
      fields: [secret, note, payload]
      searchable: [secret]
    columns:
      - {name: id, type: Integer, primary_key: true}
      - {name: secret, type: String(40)}
      - {name: note, type: Text}
      - {name: payload, type: JSON}
      - {name: label, type: String(20)}
"""


@pytest.fixture
def vault_dir(write_models: Callable[..., Path]) -> Path:
    return write_models({"vault.yaml": VAULT})


def _raw(timber, sql: str) -> list[tuple]:  # type: ignore[no-untyped-def]
    with timber.db.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql))]


def _fill(timber, n: int) -> None:  # type: ignore[no-untyped-def]
    Vault = timber.get_model("Vault")
    with timber.db.session_scope() as s:
        s.add_all([Vault(id=i, secret=f"acct-{i}", note=f"note {i}", payload={"n": i}) for i in range(1, n + 1)])


def test_encrypted_fields_read_back_as_plaintext_and_raw_sql_sees_only_tokens(
    database_url: str, vault_dir: Path
) -> None:
    timber = initialize_timber(model_config_dirs=[vault_dir], database_url=database_url)
    Vault = timber.get_model("Vault")
    with timber.db.session_scope() as s:
        s.add(Vault(id=1, secret="IBAN DE89 3704", note="the plan", payload={"target": 101.5}, label="x"))
    with timber.db.session_scope() as s:
        row = s.get(Vault, 1)
        assert (row.secret, row.note, row.payload, row.label) == ("IBAN DE89 3704", "the plan", {"target": 101.5}, "x")
    secret, note, payload, secret_hash = _raw(timber, "SELECT secret, note, payload, secret_hash FROM vault")[0]
    for raw in (secret, note, str(payload)):
        assert raw.startswith("gAAAAA") and "IBAN" not in raw and "plan" not in raw and "101.5" not in raw
    assert len(secret_hash) == 64 and "IBAN" not in secret_hash


def test_a_core_insert_on_the_table_is_encrypted_too(database_url: str, vault_dir: Path) -> None:
    timber = initialize_timber(model_config_dirs=[vault_dir], database_url=database_url)
    Vault = timber.get_model("Vault")
    with timber.db.engine.begin() as conn:
        conn.execute(insert(Vault.__table__).values(id=7, note="core path"))
    assert _raw(timber, "SELECT note FROM vault")[0][0].startswith("gAAAAA")
    with timber.db.session_scope() as s:
        assert s.get(Vault, 7).note == "core path"


def test_an_encrypted_model_without_a_key_fails_at_start_up_naming_the_model(
    vault_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("TIMBER_ENCRYPTION_KEYS")
    with pytest.raises(ConfigError, match=r"Vault.*TIMBER_ENCRYPTION_KEYS"):
        initialize_timber(model_config_dirs=[vault_dir], database_url=f"sqlite:///{tmp_path}/k.db")


def test_a_malformed_key_is_a_config_error_not_a_crash(vault_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a Fernet key"):
        initialize_timber(model_config_dirs=[vault_dir], database_url=f"sqlite:///{tmp_path}/k.db",
                          encryption_keys="not-a-key")


def test_reading_with_a_wrong_key_names_the_model_field_and_row(database_url: str, vault_dir: Path) -> None:
    timber = initialize_timber(model_config_dirs=[vault_dir], database_url=database_url)
    _fill(timber, 1)
    other = initialize_timber(model_config_dirs=[vault_dir], database_url=database_url, create_tables=False,
                              encryption_keys=Fernet.generate_key().decode())
    Vault = other.get_model("Vault")
    with pytest.raises(DecryptionError) as info, other.db.session_scope() as s:
        s.get(Vault, 1)
    assert (info.value.model, info.value.field, info.value.row_id) == ("Vault", "secret", 1)
    assert "Vault.secret (id 1)" in str(info.value)
    with pytest.raises(DecryptionError, match="Vault"), other.db.session_scope() as s:
        s.scalars(select(Vault)).all()


def test_validation_still_checks_the_plaintext_length_of_an_encrypted_string(vault_dir: Path,
                                                                             tmp_path: Path) -> None:
    timber = initialize_timber(model_config_dirs=[vault_dir], database_url=f"sqlite:///{tmp_path}/v.db")
    Vault = timber.get_model("Vault")
    assert validate_record(Vault, {"id": 1, "payload": {"a": [1]}})["payload"] == {"a": [1]}
    with pytest.raises(ValidationError, match=r"Vault.secret.*holds 40"):
        validate_record(Vault, {"id": 1, "secret": "x" * 41})


def test_a_searchable_field_is_found_by_equality_through_its_keyed_hash(database_url: str, vault_dir: Path) -> None:
    timber = initialize_timber(model_config_dirs=[vault_dir], database_url=database_url)
    _fill(timber, 5)
    Vault = timber.get_model("Vault")
    with timber.db.session_scope() as s:
        found = s.scalars(select(Vault).where(lookup_clause(Vault, "secret", "acct-3"))).all()
        assert [v.id for v in found] == [3]
        assert s.scalars(select(Vault).where(lookup_clause(Vault, "secret", "acct-99"))).all() == []
        s.get(Vault, 3).secret = "changed"
    with timber.db.session_scope() as s:
        assert [v.id for v in s.scalars(select(Vault).where(lookup_clause(Vault, "secret", "changed")))] == [3]
    with pytest.raises(ConfigError, match=r"not in encryption\.searchable"):
        lookup_clause(Vault, "note", "x")


def test_rotation_re_encrypts_every_row_so_the_old_key_can_be_removed(database_url: str, vault_dir: Path) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    before = initialize_timber(model_config_dirs=[vault_dir], database_url=database_url, encryption_keys=old)
    _fill(before, 7)
    both = initialize_timber(model_config_dirs=[vault_dir], database_url=database_url, create_tables=False,
                             encryption_keys=f"{new},{old}")
    report = rotate_encryption_keys(both, batch_size=3)
    assert (report.rows_seen, report.values_rotated, report.batches) == (7, 21, 3)
    for (token,) in _raw(both, "SELECT note FROM vault"):
        Fernet(new.encode()).decrypt(token.encode())  # every token is now the new key's
    after = initialize_timber(model_config_dirs=[vault_dir], database_url=database_url, create_tables=False,
                              encryption_keys=new)
    Vault = after.get_model("Vault")
    with after.db.session_scope() as s:
        rows = s.scalars(select(Vault).order_by(Vault.id)).all()
        assert [(v.secret, v.payload) for v in rows] == [(f"acct-{i}", {"n": i}) for i in range(1, 8)]
        assert [v.id for v in s.scalars(select(Vault).where(lookup_clause(Vault, "secret", "acct-6")))] == [6]


def test_lookups_keep_working_in_the_middle_of_a_rotation(database_url: str, vault_dir: Path) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    _fill(initialize_timber(model_config_dirs=[vault_dir], database_url=database_url, encryption_keys=old), 2)
    both = initialize_timber(model_config_dirs=[vault_dir], database_url=database_url, create_tables=False,
                             encryption_keys=f"{new},{old}")
    Vault = both.get_model("Vault")
    with both.db.session_scope() as s:
        s.add(Vault(id=3, secret="acct-3"))  # written under the new key, beside rows under the old one
    with both.db.session_scope() as s:
        ids = s.scalars(select(Vault.id).where(lookup_clause(Vault, "secret", "acct-1"))).all()
        assert ids == [1]
        assert s.scalars(select(Vault.id).where(lookup_clause(Vault, "secret", "acct-3"))).all() == [3]


class Interrupted(Exception):
    pass


def test_an_interrupted_rotation_resumes_without_redoing_finished_rows(database_url: str, vault_dir: Path) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    _fill(initialize_timber(model_config_dirs=[vault_dir], database_url=database_url, encryption_keys=old), 10)
    both = initialize_timber(model_config_dirs=[vault_dir], database_url=database_url, create_tables=False,
                             encryption_keys=f"{new},{old}")

    def crash_after_first_batch(model: str, rows: int, rotated: int) -> None:
        raise Interrupted

    with pytest.raises(Interrupted):
        rotate_encryption_keys(both, batch_size=4, progress=crash_after_first_batch)
    resumed = rotate_encryption_keys(both, batch_size=4)
    assert resumed.rows_seen == 10 and resumed.values_rotated == 3 * 6  # the first 4 rows were done
    assert rotate_encryption_keys(both, batch_size=4).values_rotated == 0
    after = initialize_timber(model_config_dirs=[vault_dir], database_url=database_url, create_tables=False,
                              encryption_keys=new)
    with after.db.session_scope() as s:
        assert sorted(v.note for v in s.scalars(select(after.get_model("Vault")))) == sorted(
            f"note {i}" for i in range(1, 11))
