"""No store a job passes through holds plaintext of an encrypted field (finding 5).

A raw dump of each store is searched for the secret: the database (every table, as text),
the result backend, the broker, Redis and the worker log, after jobs that create, update,
upsert, fail into the dead-letter table and wait in the outbox.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from kombu.exceptions import DecodeError
from sqlalchemy import inspect, text

from timber_tasks.jobs import dead_letters, sealing
from timber_tasks.jobs.tables import OutboxMessage
from timber_tasks.tasks.base import enqueue

from .platforms import Platform, wait_for

PERSIST = "timber.persistence.persist"


def _database_dump(platform: Platform) -> str:
    engine = platform.timber.db.engine
    with engine.connect() as conn:
        return "\n".join(repr(list(conn.execute(text(f'SELECT * FROM "{table}"'))))
                         for table in inspect(engine).get_table_names())


def _redis_dump(url: str) -> str:
    with redis.Redis.from_url(url) as client:
        out = []
        for key in client.scan_iter(count=1000):
            kind = client.type(key).decode()
            value: Any = {"string": client.get, "list": lambda k: client.lrange(k, 0, -1),
                          "hash": client.hgetall, "set": client.smembers,
                          "zset": lambda k: client.zrange(k, 0, -1)}.get(kind, lambda k: b"")(key)
            out.append(f"{key!r} {value!r}")
        return "\n".join(out)


def _files_dump(folder: Path) -> str:
    return "\n".join(p.read_bytes().decode("latin-1") for p in folder.rglob("*") if p.is_file())


def _everything(platform: Platform) -> str:
    dumps = [_database_dump(platform), _files_dump(platform.tmp)]  # SQLite, results, broker folder, logs
    if platform.name != "embedded":
        dumps.append(_redis_dump(platform.env["RESULT_BACKEND_URL"]))
    return "\n".join(dumps)


def test_job_payloads_results_and_logs_never_show_an_encrypted_field(platform: Platform) -> None:
    secret = f"TOPSECRET-{uuid.uuid4().hex}"
    persist = platform.task(PERSIST)
    user = {"id": "user-1", "email": "user1@example.com", "username": "user_1"}
    research = {"id": "r-1", "user_id": "user-1", "symbol": "ACME", "analysis_type": "dcf",
                "proprietary_analysis": {"target": secret}}
    with platform.timber.db.session_scope() as session:
        session.add(platform.timber.get_model("User")(**user))
    waiting = persist.delay("StockResearchSession", "create", research)  # no worker yet: it sits on the broker
    assert secret not in _everything(platform)
    with platform.timber.db.session_scope() as session:  # a job in the outbox, as it is until relayed
        task_id = enqueue(session, PERSIST, "StockResearchSession", "upsert", {**research, "id": "r-2"})
        session.flush()
        raw = session.execute(text("SELECT args FROM timber_outbox WHERE task_id = :t"), {"t": task_id}).scalar()
        assert raw is not None and secret not in str(raw)
        session.expire_all()  # read it back through the column type
        assert session.get(OutboxMessage, task_id).args[2]["proprietary_analysis"] == {"target": secret}

    platform.start_worker()
    created = waiting.get(timeout=60)
    assert created["record"]["id"] == "r-1" and "proprietary_analysis" not in created["record"]
    persist.delay("StockResearchSession", "update", {"id": "r-1", "proprietary_analysis": [secret]}).get(timeout=60)
    persist.delay("StockResearchSession", "upsert", [{**research, "id": "r-3"}]).get(timeout=60)
    failed = persist.delay("StockResearchSession", "update", {"id": "r-404", "proprietary_analysis": secret})
    with pytest.raises(Exception, match="no record"):
        failed.get(timeout=60)
    letter = wait_for(lambda: dead_letters.list_letters(platform.timber.db), 30, "the dead letter")[0]
    assert letter.args[2]["proprietary_analysis"] == secret  # the dead letter still holds what a retry needs
    with platform.timber.db.session_scope() as session:  # and the column itself reads back from the ring
        model = platform.timber.get_model("StockResearchSession")
        assert session.get(model, "r-1").proprietary_analysis == [secret]
    dump = _everything(platform)
    assert "TOPSECRET-" not in dump
    assert "user_1" in dump  # the dump does see plain values: the check could fail


def test_a_payload_sealed_under_an_unknown_key_is_a_clear_decode_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from cryptography.fernet import Fernet

    sealing.register_serializer()
    sealed = sealing._encode({"args": ["x"]})
    assert sealed.startswith(sealing.SEALED) and "args" not in sealed
    monkeypatch.setenv("TIMBER_ENCRYPTION_KEYS", Fernet.generate_key().decode())
    sealing.use_keyring(None)
    with pytest.raises(DecodeError, match="no configured key opens"):
        sealing._decode(sealed)
    with pytest.raises(DecodeError, match="not a timber-json payload"):
        sealing._decode(b'{"args": []}')
