"""GDPR export, erasure, verify, ledger and audit on SQLite (embedded) and PostgreSQL + Redis."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select, text

from timber_tasks import ModelConfigError, gdpr, initialize_timber
from timber_tasks.gdpr import audit
from timber_tasks.gdpr.stores.database import DatabaseStore
from timber_tasks.gdpr.tables import AuditEntry, ErasureRecord, PersonalDataChange
from timber_tasks.jobs import persistence, sealing
from timber_tasks.models.records import validate_record
from timber_tasks.runtime import Timber

from .conftest import ROOT
from .embedding_helpers import BACKENDS, make_store
from .gdpr_helpers import add_vector, seed_subject

ADA, BOB = "subject-ada", "subject-bob"  # 'u', 's', '-' are not hex: these never appear inside a hash


@pytest.fixture(params=["embedded", "postgres-redis"])
def timber(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Timber]:
    if request.param == "embedded":
        url, redis = f"sqlite:///{tmp_path / 'timber.db'}", None
    else:
        url, redis = request.getfixturevalue("postgres_url"), request.getfixturevalue("redis_url")
        monkeypatch.setenv("RESULT_BACKEND_URL", redis)  # Celery results in Redis too
    t = initialize_timber(model_config_dirs=[ROOT / "model_configs"], database_url=url, redis_url=redis)
    yield t
    t.close()


def test_verify_finds_the_subject_in_every_store_before_erasure_and_nothing_after(timber: Timber) -> None:
    seed_subject(timber, ADA)
    seed_subject(timber, BOB)
    before = gdpr.verify_subject(timber, ADA).found
    expected = {"database:User", "database:Session", "database:StockResearchSession", "database:TrackedEvent",
                "database:Order", "database:Notification", "database:StockResearchSession.research_data",
                "cache:L1:User", "job_records", "outbox", "dead_letters", "celery_results", "vectors:gdpr_notes"}
    if timber.settings.redis_url:
        expected.add("cache:L2:User")
    assert expected <= set(before), before
    bob_before = gdpr.verify_subject(timber, BOB).found

    report = gdpr.erase_subject(timber, ADA, requested_by="test")

    assert gdpr.verify_subject(timber, ADA).clean, gdpr.verify_subject(timber, ADA).found
    assert report.counts["database"] > 0 and report.counts["job_records"] == 1 and report.counts["outbox"] == 1
    # The other subject keeps everything (cache entries of erased models are invalidated, and refill on read).
    def kept(found: dict[str, int]) -> dict[str, int]:
        return {k: n for k, n in found.items() if not k.startswith("cache:")}

    assert kept(gdpr.verify_subject(timber, BOB).found) == kept(bob_before)


def test_anonymized_models_keep_blanked_rows_and_deleted_models_lose_theirs(timber: Timber) -> None:
    ids = seed_subject(timber, ADA, events=4)
    seed_subject(timber, BOB)
    gdpr.erase_subject(timber, ADA, requested_by="test")
    Event, User, Data = (timber.get_model(n) for n in ("TrackedEvent", "User", "ResearchData"))
    with timber.db.session_scope() as session:
        kept = list(session.scalars(select(Event).where(Event.id >= ids["first_event"],
                                                        Event.id < ids["first_event"] + 4)))
        assert len(kept) == 4 and all(e.user_id is None and e.properties is None for e in kept)
        assert {e.event_type for e in kept} == {"login"}  # what is not personal stays for analytics
        assert session.get(User, ADA) is None and session.get(User, BOB) is not None
        assert session.scalar(select(func.count()).select_from(Data).where(Data.session_id == ids["research_id"])) == 0
        assert session.scalar(select(func.count()).select_from(Event).where(Event.user_id == BOB)) == 3


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def test_an_export_holds_every_model_decrypted_with_a_manifest_whose_hashes_match(
        timber: Timber, tmp_path: Path) -> None:
    seed_subject(timber, ADA)
    seed_subject(timber, BOB)
    calls: list[tuple[str, int, int]] = []
    report = gdpr.export_subject(timber, ADA, tmp_path / "ada.zip", actor="test",
                                 progress=lambda *a: calls.append(a))
    files = _members(report.path)
    manifest = json.loads(files["manifest.json"])
    assert manifest["subject"] == ADA and manifest["subject_found"] and manifest["app"] == timber.app_name
    assert manifest["row_counts"]["TrackedEvent"] == 3 and manifest["row_counts"]["User"] == 1
    assert manifest["row_counts"]["StockResearchSession.research_data"] == 1
    assert manifest["models"]["StockResearchSession.research_data"]["reached_through"] == \
        "StockResearchSession.research_data"
    for name, digest in manifest["files"].items():
        assert hashlib.sha256(files[name]).hexdigest() == digest, name
    assert set(manifest["files"]) == set(files) - {"manifest.json"}
    user_info = manifest["models"]["User"]
    assert user_info["legal_basis"] == "contract" and user_info["recipients"] == ["Canopy", "Grove"]
    assert user_info["purpose"] and user_info["retention"] and user_info["source"]
    research = [json.loads(line) for line in files["data/StockResearchSession.jsonl"].splitlines()]
    assert research[0]["proprietary_analysis"] == {"secret": f"edge of {ADA}"}  # decrypted
    events = list(csv.reader(io.StringIO(files["data/TrackedEvent.csv"].decode())))
    assert events[0] == ["app_name", "event_type", "properties", "occurred_at"] and len(events) == 4
    assert BOB not in b"".join(files.values()).decode()
    assert calls and calls[-1][1] == calls[-1][2]  # progress reached the total of its part
    assert [e.action for e in audit.entries(timber, gdpr.Subject.of(timber, ADA).hash)] == ["export"]


def test_an_unknown_user_gets_an_empty_export_whose_manifest_says_so(timber: Timber, tmp_path: Path) -> None:
    seed_subject(timber, BOB)
    report = gdpr.export_subject(timber, "nobody-here", tmp_path / "none.zip")
    manifest = gdpr.read_manifest(report.path)
    assert manifest["subject_found"] is False and "no personal data" in manifest["note"]
    assert set(manifest["row_counts"].values()) == {0}


def test_an_existing_output_file_is_refused_unless_forced(timber: Timber, tmp_path: Path) -> None:
    out = tmp_path / "taken.zip"
    out.write_bytes(b"keep me")
    with pytest.raises(gdpr.OutputExistsError, match="taken.zip.*--force"):
        gdpr.export_subject(timber, ADA, out)
    assert out.read_bytes() == b"keep me"
    gdpr.export_subject(timber, ADA, out, force=True)
    assert "manifest.json" in _members(out)


def test_an_encrypted_export_opens_with_its_passphrase_or_key_and_refuses_a_wrong_one(
        timber: Timber, tmp_path: Path) -> None:
    seed_subject(timber, ADA)
    sealed = tmp_path / "ada.zip.enc"
    gdpr.export_subject(timber, ADA, sealed, archive_key=gdpr.ArchiveKey(passphrase="correct horse"))
    assert b"edge of" not in sealed.read_bytes() and not zipfile.is_zipfile(sealed)
    with pytest.raises(gdpr.GdprError, match="wrong passphrase"):
        gdpr.decrypt_archive(sealed, tmp_path / "wrong.zip", gdpr.ArchiveKey(passphrase="battery staple"))
    gdpr.decrypt_archive(sealed, tmp_path / "ada.zip", gdpr.ArchiveKey(passphrase="correct horse"))
    assert b"edge of" in _members(tmp_path / "ada.zip")["data/StockResearchSession.jsonl"]
    key = gdpr.new_key()
    gdpr.export_subject(timber, ADA, tmp_path / "k.enc", archive_key=gdpr.ArchiveKey(key=key))
    gdpr.decrypt_archive(tmp_path / "k.enc", tmp_path / "k.zip", gdpr.ArchiveKey(key=key))
    assert gdpr.read_manifest(tmp_path / "k.zip")["encrypted_for_delivery"] is True


def test_an_interrupted_erasure_completes_when_run_again(timber: Timber) -> None:
    seed_subject(timber, ADA)
    request = gdpr.request_erasure(timber, ADA, requested_by="test")
    DatabaseStore(timber).erase(gdpr.Subject.of(timber, ADA))  # the run died after the database part
    left = gdpr.verify_subject(timber, ADA).found
    assert "ledger:unfinished erasure" in left and "job_records" in left and not any(
        k.startswith("database:") for k in left)
    assert gdpr.unfinished(timber) == [request]
    gdpr.run_erasure(timber, request)
    assert gdpr.verify_subject(timber, ADA).clean and gdpr.unfinished(timber) == []


def _restore(timber: Timber, backup: Path) -> None:
    """Put the rows of an export back, as a database restore would (the ledger table goes back too)."""
    with zipfile.ZipFile(backup) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        parents_first = {"User": "User", "Session": "Session", "StockResearchSession": "StockResearchSession",
                         "StockResearchSession.research_data": "ResearchData", "TrackedEvent": "TrackedEvent",
                         "Order": "Order", "Notification": "Notification"}
        for part, name in parents_first.items():
            model = timber.get_model(name)
            rows = [json.loads(line) for line in zf.read(f"data/{part}.jsonl").splitlines()]
            if rows:
                table = model.__table__
                records = [validate_record(model, r) for r in rows]
                with timber.db.engine.begin() as conn:  # the backup's version of each row replaces today's
                    conn.execute(table.delete().where(table.c.id.in_([r["id"] for r in records])))
                    conn.execute(insert(table), records)
        assert manifest["subject_found"]
    with timber.db.session_scope() as session:
        session.execute(ErasureRecord.__table__.delete())


def test_replaying_the_ledger_after_a_restore_erases_the_restored_subject_again(
        timber: Timber, tmp_path: Path) -> None:
    seed_subject(timber, ADA)
    seed_subject(timber, BOB)
    backup = gdpr.export_subject(timber, ADA, tmp_path / "backup.zip").path
    gdpr.erase_subject(timber, ADA, requested_by="test")
    _restore(timber, backup)
    assert "database:User" in gdpr.verify_subject(timber, ADA).found  # the restore brought Ada back
    reports = gdpr.replay_ledger(timber, requested_by="test")
    assert len(reports) == 1 and reports[0].subject_hash == gdpr.Subject.of(timber, ADA).hash
    assert not any(k.startswith("database:") for k in gdpr.verify_subject(timber, ADA).found)
    assert "database:User" in gdpr.verify_subject(timber, BOB).found
    assert gdpr.replay_ledger(timber, requested_by="test") == []  # nothing left to replay


def _rotated_then_old_key_dropped(timber: Timber, **settings: str) -> Timber:
    """`keys rotate` to a new Fernet key, then a process configured with the new key only."""
    from cryptography.fernet import Fernet

    from timber_tasks.features.encryption import rotate_encryption_keys
    from timber_tasks.jobs.tables import system_metadata

    from .conftest import TEST_ENCRYPTION_KEY

    new = Fernet.generate_key().decode()
    url, redis = timber.settings.database_url, timber.settings.redis_url
    both = initialize_timber(model_config_dirs=[ROOT / "model_configs"], database_url=url, redis_url=redis,
                             encryption_keys=f"{new},{TEST_ENCRYPTION_KEY}", **settings)
    rotate_encryption_keys(both)
    sealing.reseal_stored(both.db, system_metadata)  # as `keys rotate` does
    both.close()
    return initialize_timber(model_config_dirs=[ROOT / "model_configs"], database_url=url, redis_url=redis,
                             encryption_keys=new, **settings)


def test_a_replay_under_keys_that_cannot_match_the_ledger_refuses_naming_the_fix_and_erases_nothing(
        timber: Timber, tmp_path: Path) -> None:
    seed_subject(timber, ADA)
    backup = gdpr.export_subject(timber, ADA, tmp_path / "backup.zip").path
    gdpr.erase_subject(timber, ADA, requested_by="test")  # hashed under a key derived from the old Fernet key
    _restore(timber, backup)  # only the ledger file outside the database remembers Ada now
    writing = gdpr.SubjectHasher.of(timber).key_id
    assert gdpr.ledger_key_counts(timber) == {writing: 1}
    dropped = _rotated_then_old_key_dropped(timber)
    try:
        new_id = gdpr.SubjectHasher.of(dropped).key_id
        with pytest.raises(gdpr.GdprError, match=rf"1 under key {writing}; configured: TIMBER_ENCRYPTION_KEYS #1 "
                                                 rf"{new_id}\).*TIMBER_GDPR_SUBJECT_KEY"):
            gdpr.replay_ledger(dropped, requested_by="test")
        assert "database:User" in gdpr.verify_subject(dropped, ADA).found  # refused before erasing anything
    finally:
        dropped.close()
        sealing.use_keyring(timber.keyring)  # job payloads are sealed process-wide: back to the fixture's key


def test_with_a_subject_key_the_ledger_survives_dropping_the_old_fernet_key(
        timber: Timber, tmp_path: Path) -> None:
    subject_key = {"gdpr_subject_key": "a-long-stable-secret-kept-apart-from-the-fernet-keys"}
    url, redis = timber.settings.database_url, timber.settings.redis_url
    keyed = initialize_timber(model_config_dirs=[ROOT / "model_configs"], database_url=url, redis_url=redis,
                              **subject_key)
    seed_subject(keyed, ADA)
    seed_subject(keyed, BOB)
    backup = gdpr.export_subject(keyed, ADA, tmp_path / "backup.zip").path
    report = gdpr.erase_subject(keyed, ADA, requested_by="test")
    assert report.subject_hash != gdpr.Subject.of(timber, ADA).hash  # not the Fernet-derived hash
    _restore(keyed, backup)
    keyed.close()
    dropped = _rotated_then_old_key_dropped(timber, **subject_key)
    try:
        subject_key_id = gdpr.SubjectHasher.of(dropped).labelled_ids()[0]
        assert subject_key_id[0] == "TIMBER_GDPR_SUBJECT_KEY #1"
        assert gdpr.ledger_key_counts(dropped) == {subject_key_id[1]: 1}
        reports = gdpr.replay_ledger(dropped, requested_by="test")
        assert [r.subject_hash for r in reports] == [report.subject_hash]
        assert not any(k.startswith("database:") for k in gdpr.verify_subject(dropped, ADA).found)
        assert "database:User" in gdpr.verify_subject(dropped, BOB).found
    finally:
        dropped.close()
        sealing.use_keyring(timber.keyring)  # job payloads are sealed process-wide: back to the fixture's key


def test_a_changed_subject_key_kept_second_still_matches_the_ledger(timber: Timber, tmp_path: Path) -> None:
    url, redis = timber.settings.database_url, timber.settings.redis_url
    first, second = "a" * 40, "b" * 40

    def keyed(keys: str) -> Timber:
        return initialize_timber(model_config_dirs=[ROOT / "model_configs"], database_url=url, redis_url=redis,
                                 gdpr_subject_key=keys)

    backups = {}
    for who, keys in ((ADA, first), (BOB, f"{second},{first}")):  # Bob is erased after the key changed
        t = keyed(keys)
        seed_subject(t, who)
        backups[who] = gdpr.export_subject(t, who, tmp_path / f"{who}.zip").path
        gdpr.erase_subject(t, who, requested_by="test")
        t.close()
    t = keyed(f"{second},{first}")
    try:
        for backup in backups.values():
            _restore(t, backup)
        # Both found (Ada's entry under the old key); the new erasures are hashed under the writing key.
        assert {r.subject_hash for r in gdpr.replay_ledger(t, requested_by="test")} == {
            gdpr.SubjectHasher(None, (second,)).hash(who) for who in (ADA, BOB)}
        with pytest.raises(gdpr.GdprError, match="hashed under keys this process lacks"):
            gdpr.replay_ledger(keyed(second), requested_by="test")  # the old key dropped: refused, named
    finally:
        t.close()


def test_a_ledger_file_line_that_is_not_an_entry_is_named_not_a_traceback(timber: Timber) -> None:
    from timber_tasks.gdpr.erase import ledger_file

    path = ledger_file(timber)
    path.parent.mkdir(parents=True, exist_ok=True)
    for bad in (b"\xff\xfe", b"[1, 2]", b"null", b'"hello"', b'{"request": "r", "subject_hash": "h", "key": {"a": 1}}',
                b'{"request": "r", "subject_hash": "h", "key": "' + b"k" * 1000 + b'"}'):
        path.write_bytes(b'{"request": "ok", "subject_hash": "h", "key": null}\n' + bad + b"\n")
        with pytest.raises(gdpr.GdprError, match=r"line 2 is not a ledger entry") as refused:
            gdpr.replay_ledger(timber, requested_by="test")
        assert len(str(refused.value)) < 600


def test_an_export_never_replaces_what_is_not_a_regular_file(timber: Timber, tmp_path: Path) -> None:
    seed_subject(timber, ADA)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for target in (fifo, tmp_path):
        with pytest.raises(gdpr.GdprError, match="is not a regular file"):
            gdpr.export_subject(timber, ADA, target, force=True)
    (tmp_path / "plain.txt").write_text("x")
    with pytest.raises(gdpr.GdprError, match=r"cannot write .*plain.txt/x.zip"):
        gdpr.export_subject(timber, ADA, tmp_path / "plain.txt" / "x.zip")
    assert fifo.is_fifo() and (tmp_path / "plain.txt").read_text() == "x"


def test_keys_rotate_says_which_old_key_the_ledger_needs_and_gdpr_keys_lists_them(
        timber: Timber, tmp_path: Path) -> None:
    from cryptography.fernet import Fernet

    from .conftest import TEST_ENCRYPTION_KEY

    seed_subject(timber, ADA)
    gdpr.erase_subject(timber, ADA, requested_by="test")
    old_id = gdpr.SubjectHasher.of(timber).key_id
    env = {**os.environ, "TIMBER_ENCRYPTION_KEYS": f"{Fernet.generate_key().decode()},{TEST_ENCRYPTION_KEY}",
           "DATABASE_URL": str(timber.settings.database_url), "TIMBER_DATA_DIR": str(timber.settings.data_dir),
           "TIMBER_MODEL_CONFIG_DIRS": str(ROOT / "model_configs"), "COLUMNS": "200"}
    env.pop("REDIS_URL", None)

    def cli(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "timber_tasks.cli", *args], env={**env, **extra}, cwd=ROOT,
                              capture_output=True, text=True, timeout=120)

    done = cli("keys", "rotate")
    assert done.returncode == 0, done.stderr
    out = " ".join(done.stdout.split())
    assert f"keep TIMBER_ENCRYPTION_KEYS #2 (key id {old_id})" in out and "1 erasure ledger entry is hashed" in out
    assert "set TIMBER_GDPR_SUBJECT_KEY" in out and "may now be removed" not in out
    with_subject_key = cli("keys", "rotate", TIMBER_GDPR_SUBJECT_KEY="s" * 40)
    assert "keep TIMBER_ENCRYPTION_KEYS #2" in with_subject_key.stdout
    assert "set TIMBER_GDPR_SUBJECT_KEY" not in " ".join(with_subject_key.stdout.split())  # it is set
    listed = cli("gdpr", "keys", TIMBER_ENCRYPTION_KEYS=Fernet.generate_key().decode())  # the old key dropped
    assert listed.returncode == 0, listed.stderr
    assert "not configured" in listed.stdout and old_id in listed.stdout and "(writes)" in listed.stdout


def test_audit_log_ledger_and_change_record_hold_no_subject_id_in_clear(timber: Timber, tmp_path: Path) -> None:
    seed_subject(timber, ADA)
    gdpr.export_subject(timber, ADA, tmp_path / "a.zip", actor="officer-1")
    gdpr.erase_subject(timber, ADA, requested_by="officer-2")
    hashed = gdpr.Subject.of(timber, ADA).hash
    entries = audit.entries(timber, hashed)
    assert [(e.action, e.actor) for e in entries] == [("export", "officer-1"), ("erase", "officer-2")]
    assert entries[0].counts["rows"]["TrackedEvent"] == 3 and entries[1].counts["database"] > 0
    with timber.db.engine.connect() as conn:
        for table in (AuditEntry, ErasureRecord, PersonalDataChange):
            dump = " ".join(str(tuple(r)) for r in conn.execute(select(table.__table__)))
            assert dump and ADA not in dump, table.__tablename__


def test_every_write_path_to_personal_data_is_recorded_with_its_app_and_job(timber: Timber) -> None:
    User, Event = timber.get_model("User"), timber.get_model("TrackedEvent")
    with timber.db.session_scope() as session:  # ORM unit of work
        session.add(User(id=ADA, email="ada@example.com", username="ada"))
    with timber.db.session_scope() as session:  # Core insert through a session
        session.execute(insert(Event), [{"id": 1, "user_id": ADA, "app_name": "grove", "event_type": "x"}])
    with audit.acting_as_job("job-1", "timber.persistence.persist"):  # a persistence job
        persistence.persist(timber, "Notification", "create", {"user_id": ADA, "app_name": "grove",
                                                               "notification_type": "n", "title": "t"},
                            idempotency_key="k-1")
    hashed = gdpr.Subject.of(timber, ADA).hash
    with timber.db.session_scope() as session:
        changes = list(session.scalars(select(PersonalDataChange).order_by(PersonalDataChange.id)))
    assert [(c.model, c.written, c.job_name) for c in changes] == [
        ("User", 1, None), ("TrackedEvent", 1, None), ("Notification", 1, "timber.persistence.persist")]
    assert all(c.subject_hashes == [hashed] and c.app_name == timber.app_name for c in changes)
    assert changes[2].job_id == "job-1"


def test_a_user_id_field_that_is_not_a_column_fails_at_load_naming_file_model_and_field(
        tmp_path: Path, write_models: Callable[..., Path]) -> None:
    folder = write_models({"notes.yaml": """
        version: "1"
        models:
          - name: Note
            table_name: notes
            gdpr: {enabled: true, user_id_field: owner_id}
            columns:
              - {name: id, type: Integer, primary_key: true}
              - {name: user_id, type: String(36)}
    """})
    with pytest.raises(ModelConfigError, match=r"notes\.yaml.*'Note'.*owner_id.*gdpr\.user_id_field names"):
        initialize_timber(model_config_dirs=[folder], database_url=f"sqlite:///{tmp_path}/t.db")


@pytest.mark.parametrize(("block", "message"), [
    ("{enabled: true, user_id_field: user_id, include: [tags]}", "gdpr.include names 'tags'"),
    ("{enabled: true, user_id_field: user_id, erasure: anonymize}", "anonymize_fields is empty"),
    ("{enabled: true, user_id_field: user_id, legal_basis: because}", "legal_basis"),
])
def test_gdpr_blocks_that_cannot_work_fail_at_load(block: str, message: str, tmp_path: Path,
                                                   write_models: Callable[..., Path]) -> None:
    folder = write_models({"notes.yaml": f"""
        version: "1"
        models:
          - name: Note
            table_name: notes
            gdpr: {block}
            columns:
              - {{name: id, type: Integer, primary_key: true}}
              - {{name: user_id, type: String(36)}}
    """})
    with pytest.raises(ModelConfigError, match=message):
        initialize_timber(model_config_dirs=[folder], database_url=f"sqlite:///{tmp_path}/t.db")


def test_sealed_payloads_are_matched_in_clear_but_stored_sealed(timber: Timber) -> None:
    seed_subject(timber, ADA)
    with timber.db.engine.connect() as conn:
        raw = " ".join(str(v) for v in conn.execute(text("SELECT args FROM timber_outbox")).scalars())
    assert ADA not in raw  # the outbox keeps tokens ...
    assert gdpr.verify_subject(timber, ADA).found["outbox"] == 1  # ... which the store opens with the key ring


def test_a_subject_recreated_by_the_same_job_keys_after_an_erasure_is_erased_again(timber: Timber) -> None:
    user = {"id": ADA, "email": "ada@example.com", "username": "ada"}
    for _ in range(2):  # e.g. the demo, run twice: its jobs carry keys that name the subject
        persistence.persist(timber, "User", "create", user, idempotency_key=f"create:{ADA}")
        assert "job_records" in gdpr.verify_subject(timber, ADA).found
        gdpr.erase_subject(timber, ADA, requested_by="test")
        assert gdpr.verify_subject(timber, ADA).clean, gdpr.verify_subject(timber, ADA).found


def test_a_completed_erasure_also_settles_earlier_unfinished_requests_for_the_subject(timber: Timber) -> None:
    seed_subject(timber, ADA)
    stale = gdpr.request_erasure(timber, ADA, requested_by="a job that died")
    gdpr.erase_subject(timber, ADA, requested_by="test")
    assert gdpr.unfinished(timber) == [] and gdpr.verify_subject(timber, ADA).clean
    with timber.db.session_scope() as session:
        record = session.get(ErasureRecord, stale)
        assert record is not None and record.status == "completed" and record.sealed_subject is None


def test_an_apps_own_connection_records_its_writes_to_personal_data(postgres_url: str) -> None:
    platform = initialize_timber(model_config_dirs=[ROOT / "model_configs"], database_url=postgres_url)
    with platform.db.session_scope() as session:
        session.add(platform.get_model("User")(id=ADA, email="ada@example.com", username="ada"))
    platform.close()
    canopy = initialize_timber(app_name="canopy", model_config_dirs=[ROOT / "model_configs"],
                               database_url=postgres_url)  # connections act as the role timber_app_canopy
    with canopy.db.session_scope() as session:
        session.add(canopy.get_model("Session")(user_id=ADA, session_type="trading"))
    with canopy.db.engine.connect() as conn:
        assert conn.execute(text("SELECT current_user")).scalar() == "timber_app_canopy"
    with canopy.db.session_scope() as session:
        rows = session.execute(select(PersonalDataChange.model, PersonalDataChange.app_name)
                               .where(PersonalDataChange.app_name == "canopy")).all()
    assert [tuple(r) for r in rows] == [("Session", "canopy")]
    canopy.close()


@pytest.mark.filterwarnings("ignore:Payload indexes have no effect in the local Qdrant:UserWarning")  # local mode
@pytest.mark.parametrize("backend", BACKENDS)
def test_the_subject_s_vectors_are_found_exported_and_erased_on_every_vector_backend(
    timber: Timber, backend: str, tmp_path: Path,
) -> None:
    from timber_tasks.gdpr.stores.vectors import VectorStore

    index = make_store(backend, tmp_path / "vectors")
    for collection in ("notes_a", "notes_b"):
        add_vector(index, collection, ADA, f"{collection}-ada")
        add_vector(index, collection, BOB, f"{collection}-bob")
    store = VectorStore(timber, index=index)
    subject = gdpr.Subject.of(timber, ADA)
    assert store.residue(subject) == {"vectors:notes_a": 1, "vectors:notes_b": 1}
    assert store.erase(subject) == 2
    assert store.residue(subject) == {}
    assert store.residue(gdpr.Subject.of(timber, BOB)) == {"vectors:notes_a": 1, "vectors:notes_b": 1}  # untouched
    index.close()
