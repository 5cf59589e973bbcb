"""`timber-tasks keys` and the demo's development key, run as a user runs them."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import func, select, text

from timber_tasks import initialize_timber
from timber_tasks.jobs import dead_letters, outbox
from timber_tasks.jobs.tables import DeadLetter, OutboxMessage

from .test_cli import SHIPPED, run


def test_keys_generate_prints_a_usable_fernet_key(tmp_path: Path) -> None:
    result = run("keys", "generate", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    Fernet(result.stdout.strip().encode())  # raises when it is not a key


def test_keys_rotate_re_encrypts_so_the_old_key_can_go(tmp_path: Path, database_url: str) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    url = database_url
    timber = initialize_timber(model_config_dirs=[SHIPPED], database_url=url, encryption_keys=old)
    User, Research = timber.get_model("User"), timber.get_model("StockResearchSession")
    with timber.db.session_scope() as s:
        user = User(email="k@example.com", username="keys")
        s.add(user)
        s.flush()
        s.add_all([Research(user_id=user.id, symbol="AAPL", analysis_type="dcf", proprietary_analysis={"n": i})
                   for i in range(5)])
    with timber.db.session_scope() as s:  # job payloads sealed under the old key: an outbox row, a dead letter
        outbox.add(s, task_id="t-1", task_name="timber.persistence.persist", args=["User", "update", {"id": "u"}],
                   kwargs={}, options={})
    dead_letters.record(timber.db, task_id="t-2", task_name="timber.persistence.persist", args=["User", "x", {}],
                        kwargs={"idempotency_key": "k"}, error=ValueError("bad"), traceback=None, attempts=1)
    with timber.db.session_scope() as s:  # and the embedding job the research rows queued, where it was recorded
        sealed = sum(s.scalar(select(func.count()).select_from(t)) or 0 for t in (OutboxMessage, DeadLetter))
    assert sealed >= 2
    timber.close()
    env = {"DATABASE_URL": url, "TIMBER_MODEL_CONFIG_DIRS": SHIPPED, "TIMBER_ENCRYPTION_KEYS": f"{new},{old}"}
    result = run("keys", "rotate", "--batch-size", "2", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert f"5 value(s) re-encrypted in 3 batch(es); {sealed} stored job payload(s) re-sealed" in result.stdout
    after = initialize_timber(model_config_dirs=[SHIPPED], database_url=url, encryption_keys=new,
                              create_tables=False)
    with after.db.session_scope() as s:
        assert sorted(r.proprietary_analysis["n"] for r in s.query(after.get_model("StockResearchSession"))) == [
            0, 1, 2, 3, 4]
        tokens = s.execute(text("SELECT proprietary_analysis FROM stock_research_sessions")).scalars().all()
    assert all(Fernet(new.encode()).decrypt(t.encode()) for t in tokens)
    # With the old key gone, the job payloads still read (the relay, `dlq retry` and GDPR need them).
    with after.db.session_scope() as s:
        assert s.get(OutboxMessage, "t-1").args == ["User", "update", {"id": "u"}]
    assert dead_letters.list_letters(after.db)[0].kwargs == {"idempotency_key": "k"}


def test_keys_rotate_without_any_key_says_what_to_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TIMBER_ENCRYPTION_KEYS")
    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/none.db", "TIMBER_MODEL_CONFIG_DIRS": SHIPPED}
    result = run("keys", "rotate", cwd=tmp_path, env=env)
    assert result.returncode == 1 and "TIMBER_ENCRYPTION_KEYS" in result.stderr and "Traceback" not in result.stderr


def test_the_demo_without_a_key_makes_a_development_key_and_says_so_loudly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TIMBER_ENCRYPTION_KEYS")
    env = {"TIMBER_MODEL_CONFIG_DIRS": SHIPPED, "TIMBER_DATA_DIR": str(tmp_path / "var")}
    first = run("demo", cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr
    assert "WARNING" in first.stderr and "DEVELOPMENT key" in first.stderr
    key_file = tmp_path / "var" / "dev-encryption.key"
    key = key_file.read_text().strip()
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert run("demo", cwd=tmp_path, env=env).returncode == 0 and key_file.read_text().strip() == key
