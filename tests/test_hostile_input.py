"""A corpus of hostile input, each case with the error it must give, on SQLite and PostgreSQL.

Payloads refused at delay() (nothing reaches the outbox or the broker), payloads a worker
refuses before writing (raw messages that skipped delay()), model YAML, beat entries and
command-line arguments. Every case names the model and field (or file and entry) concerned;
nothing is written; a worker that gets the worst of them keeps running and dead-letters them.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from timber_tasks import runtime
from timber_tasks.beat import load_schedule
from timber_tasks.errors import ConfigError, ModelConfigErrors, ValidationError
from timber_tasks.jobs import dead_letters, outbox, persistence, sealing
from timber_tasks.jobs.tables import JobRecord
from timber_tasks.models.registry import ModelRegistry

from .conftest import ROOT
from .platforms import Platform, open_platform, wait_for

PERSIST = "timber.persistence.persist"
USER = {"id": "u1", "email": "u1@example.com", "username": "user1"}


def _deep(levels: int) -> Any:
    value: Any = "bottom"
    for _ in range(levels):
        value = [value]
    return value


def _deep_dict(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"k": value}
    return value


@dataclass(frozen=True)
class Case:
    name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    model: str | None  # what .model must be (None: not checked)
    field: str | None  # what .field must be
    says: str  # a piece of the message


def case(name: str, *args: Any, model: str | None = None, field: str | None = None, says: str = "",
         **kwargs: Any) -> Case:
    return Case(name, args, kwargs, model, field, says)


def session(**fields: Any) -> dict[str, Any]:
    return {"user_id": "u1", "session_type": "trading", **fields}


# -- refused at delay(): nothing is written anywhere ------------------------------------------
AT_DELAY = [
    case("NaN", "Session", "create", session(data={"x": float("nan")}), model="Session", field="data", says="NaN"),
    case("+Infinity", "Order", "create", {"price": float("inf")}, model="Order", field="price", says="Infinity"),
    case("-Infinity", "Order", "create", {"price": float("-inf")}, model="Order", field="price", says="Infinity"),
    case("NaN in a batch", "Session", "create", [session(), session(data=[float("nan")])], model="Session",
         field="data", says="NaN"),
    case("datetime object", "Session", "create", session(completed_at=dt.datetime(2024, 1, 1)), model="Session",
         field="completed_at", says="ISO 8601"),
    case("date object", "Session", "create", session(data={"d": dt.date(2024, 1, 1)}), model="Session",
         field="data", says="ISO 8601"),
    case("set", "Session", "create", session(data={"tags": {"a"}}), model="Session", field="data", says="set"),
    case("Decimal object", "Order", "create", {"price": Decimal("1.5")}, model="Order", field="price",
         says="decimals as strings"),
    case("bytes", "User", "create", {**USER, "username": b"user1"}, model="User", field="username", says="bytes"),
    case("an object", "User", "create", {**USER, "email": object()}, model="User", field="email", says="object"),
    case("NUL in a value", "User", "create", {**USER, "username": "us\x00er"}, model="User", field="username",
         says="NUL"),
    case("NUL in a key", "Session", "create", session(data={"a\x00b": 1}), model="Session", field="data",
         says="NUL"),
    case("NUL in a field name", "User", "create", {**USER, "user\x00name": "x"}, model="User",
         field="user\x00name", says="NUL"),
    case("lone surrogate value", "User", "create", {**USER, "username": "ab\ud800"}, model="User",
         field="username", says="surrogate"),
    case("lone surrogate key", "Session", "create", session(data={"\udfff": 1}), model="Session", field="data",
         says="surrogate"),
    case("JSON nested 5,000 deep (list)", "Session", "create", session(data=_deep(5000)), model="Session",
         field="data", says="deeper than 32"),
    case("JSON nested 5,000 deep (object)", "Session", "create", session(data=_deep_dict(5000)),
         model="Session", field="data", says="deeper than 32"),
    case("non-string object key", "Session", "create", session(data={1: "x"}), model="Session", field="data",
         says="int key"),
    case("null model name", None, "create", USER, model="None", says="model name"),
    case("object model name", {"name": "User"}, "create", USER, says="model name"),
    case("empty model name", "", "create", USER, says="model name"),
    case("numeric model name", 7, "create", USER, model="7", says="model name"),
    case("model name with NUL", "Us\x00er", "create", USER, says="model name"),
    case("null operation", "User", None, USER, model="User", says="unknown operation"),
    case("unknown operation", "User", "drop", USER, model="User", says="unknown operation 'drop'"),
    case("SQL as operation", "User", "create; DROP TABLE users", USER, model="User", says="unknown operation"),
    case("null data", "User", "create", None, model="User", says="expected an object"),
    case("string data", "User", "create", "id=1", model="User", says="expected an object"),
    case("empty batch", "User", "create", [], model="User", says="at least one record"),
    case("batch of numbers", "User", "create", [1, 2], model="User", says="expected an object"),
    case("batch with a null record", "User", "create", [USER, None], model="User", says="expected an object"),
    case("500-character idempotency key", "User", "create", USER, idempotency_key="k" * 500, model="User",
         field="idempotency_key", says="at most 200"),
    case("integer idempotency key", "User", "create", USER, idempotency_key=12345, model="User",
         field="idempotency_key", says="non-empty string"),
    case("empty idempotency key", "User", "create", USER, idempotency_key="  ", model="User",
         field="idempotency_key", says="non-empty string"),
    case("object idempotency key", "User", "create", USER, idempotency_key={"k": 1}, model="User",
         field="idempotency_key", says="non-empty string"),
    case("NUL in the idempotency key", "User", "create", USER, idempotency_key="a\x00b", model="User",
         field="idempotency_key", says="NUL"),
    case("unknown keyword argument", "User", "create", USER, bogus=1, model=PERSIST, says="unexpected keyword"),
    case("missing argument", "User", "create", model=PERSIST, says="missing a required argument"),
    case("too many arguments", "User", "create", USER, "key", "extra", model=PERSIST, says="too many"),
]

# -- refused by the worker's own checks, before any write (a raw message that skipped delay()) --
IN_WORKER = [
    case("price beyond Numeric(12, 2)", "Order", "create",
         {"user_id": "u1", "symbol": "AAPL", "order_type": "limit", "side": "buy", "quantity": 1,
          "price": "123456789012.5"}, model="Order", field="price", says="holds 10"),
    case("volume beyond BigInteger", "OhlcvPrice", "create",
         {"symbol": "X", "interval": "1d", "ts": "2024-01-01T00:00:00", "volume": 2**63}, model="OhlcvPrice",
         field="volume", says="out of range"),
    case("quantity beyond Integer", "Order", "create",
         {"user_id": "u1", "symbol": "AAPL", "order_type": "limit", "side": "buy", "quantity": 2**40},
         model="Order", field="quantity", says="out of range"),
    case("datetime that overflows", "Session", "create", session(completed_at="9999-12-31T23:59:59-05:00"),
         model="Session", field="completed_at", says="out of range"),
    case("datetime before year 1", "Session", "create", session(completed_at="0000-01-01T00:00:00"),
         model="Session", field="completed_at", says=""),
    case("not a date", "Session", "create", session(completed_at="yesterday"), model="Session",
         field="completed_at", says="yesterday"),
    case("NaN as a string for a Numeric", "Order", "create",
         {"user_id": "u1", "symbol": "AAPL", "order_type": "limit", "side": "buy", "quantity": 1, "price": "NaN"},
         model="Order", field="price", says="finite"),
    case("Infinity as a string for a Numeric", "OhlcvPrice", "create",
         {"symbol": "X", "interval": "1d", "ts": "2024-01-01T00:00:00", "close": "-Infinity"},
         model="OhlcvPrice", field="close", says="finite"),
    case("boolean for an integer", "Order", "create",
         {"user_id": "u1", "symbol": "AAPL", "order_type": "limit", "side": "buy", "quantity": True},
         model="Order", field="quantity", says="integer"),
    case("string for a boolean", "User", "create", {**USER, "is_active": "yes"}, model="User",
         field="is_active", says="true or false"),
    case("string longer than its column", "Order", "create",
         {"user_id": "u1", "symbol": "A" * 11, "order_type": "limit", "side": "buy", "quantity": 1},
         model="Order", field="symbol", says="holds 10"),
    case("unknown field", "User", "create", {**USER, "is_admin": True}, model="User", field="is_admin",
         says="unknown field"),
    case("null for a required field", "User", "create", {**USER, "username": None}, model="User",
         field="username", says="may not be null"),
    case("required field missing", "User", "create", {"id": "u9", "email": "u9@example.com"}, model="User",
         field="username", says="is required"),
    case("invalid email", "User", "create", {**USER, "email": "nope"}, model="User", field="email",
         says="email"),
    case("interval outside its regex", "OhlcvPrice", "create",
         {"symbol": "X", "interval": "7d", "ts": "2024-01-01T00:00:00"}, model="OhlcvPrice", field="interval"),
    case("negative quantity (range validator)", "Order", "create",
         {"user_id": "u1", "symbol": "AAPL", "order_type": "limit", "side": "buy", "quantity": -5},
         model="Order", field="quantity"),
    case("CHECK: side not allowed", "Order", "create",
         {"user_id": "u1", "symbol": "AAPL", "order_type": "limit", "side": "hold", "quantity": 1},
         model="Order", field="side", says="allowed values: buy, sell"),
    case("CHECK: negative volume", "OhlcvPrice", "create",
         {"symbol": "X", "interval": "1d", "ts": "2024-01-01T00:00:00", "volume": -1}, model="OhlcvPrice",
         field="volume", says="volume >= 0"),
    case("unknown foreign key", "Order", "create",
         {"user_id": "ghost", "symbol": "AAPL", "order_type": "limit", "side": "buy", "quantity": 1},
         model="Order", field="user_id", says="'ghost' is not the id of a row in users"),
    case("taken unique value", "User", "create", {"id": "u2", "email": "u2@example.com", "username": "user1"},
         model="User", field="username", says="taken"),
    case("batch update naming one missing row", "User", "update",
         [{"id": "u1", "username": "renamed"}, {"id": "ghost", "username": "nobody"}], model="User", field="id",
         says="no record with {'id': 'ghost'}"),
    case("update of a missing row", "User", "update", {"id": "ghost", "username": "nobody"}, model="User",
         field="id", says="no record"),
    case("update without the primary key", "User", "update", {"username": "xyz"}, model="User", field="id",
         says="needs the primary key"),
    case("computed column written", "User", "create", {**USER, "id": "u5", "username": "user5",
                                                       "email": "u5@example.com", "created_at": "x"},
         model="User", field="created_at"),
    case("unknown scope value", "Session", "create", session(session_type="nonsense"), model="Session",
         field="session_type", says="nonsense"),
]


@pytest.fixture(params=["embedded", "redis"])
def bench_platform(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Platform]:
    """SQLite + the embedded broker, and PostgreSQL + Redis: no worker unless a test starts one."""
    postgres = request.getfixturevalue("postgres_url") if request.param == "redis" else None
    yield from open_platform(request.param, tmp_path, postgres)


def _counts(platform: Platform) -> dict[str, int]:
    tables = {m.timber_spec.name: m for m in platform.timber.registry if "__table__" in m.__dict__}
    with platform.timber.db.session_scope() as s:
        counts = {name: int(s.scalar(select(func.count()).select_from(m)) or 0) for name, m in tables.items()}
        counts["job records"] = int(s.scalar(select(func.count()).select_from(JobRecord)) or 0)
    return counts


def _mismatch(c: Case, exc: BaseException | None) -> str | None:
    if not isinstance(exc, ValidationError):
        return f"{c.name}: expected ValidationError, got {type(exc).__name__}: {exc!s:.200}"
    text = str(exc)
    if c.model is not None and exc.model != c.model:
        return f"{c.name}: model {exc.model!r}, expected {c.model!r} ({text:.200})"
    if c.field is not None and exc.field != c.field:
        return f"{c.name}: field {exc.field!r}, expected {c.field!r} ({text:.200})"
    if c.says not in text:
        return f"{c.name}: {text[:200]!r} does not say {c.says!r}"
    return None


def test_the_corpus_has_at_least_80_cases() -> None:
    assert len(AT_DELAY) + len(IN_WORKER) + len(BAD_YAML) + len(BAD_BEAT) + len(BAD_CLI) >= 80


def test_hostile_payloads_are_refused_at_delay_and_nothing_is_written(bench_platform: Platform) -> None:
    persist = bench_platform.task(PERSIST)
    before = _counts(bench_platform)
    problems = []
    for c in AT_DELAY:
        try:
            persist.delay(*c.args, **c.kwargs)
        except Exception as exc:
            problem = _mismatch(c, exc)
        else:
            problem = f"{c.name}: delay() accepted it"
        if problem:
            problems.append(problem)
    assert not problems, "\n".join(problems)
    assert outbox.counts(bench_platform.timber.db) == {}
    assert _counts(bench_platform) == before


def test_hostile_records_are_refused_by_the_job_before_anything_is_written(bench_platform: Platform) -> None:
    timber = bench_platform.timber
    persistence.persist(timber, "User", "create", USER, idempotency_key="setup-user")
    before = _counts(bench_platform)
    problems = []
    for n, c in enumerate(IN_WORKER):
        try:
            persistence.persist(timber, *c.args, idempotency_key=f"hostile-{n}", **c.kwargs)
        except Exception as exc:
            problem = _mismatch(c, exc)
        else:
            problem = f"{c.name}: the job accepted it"
        if problem:
            problems.append(problem)
    assert not problems, "\n".join(problems)
    assert _counts(bench_platform) == before


def test_a_worker_given_raw_hostile_messages_keeps_running_and_dead_letters_each(bench_platform: Platform) -> None:
    worker = bench_platform.start_worker(concurrency=1)
    worst = [c for c in IN_WORKER if c.name in {
        "price beyond Numeric(12, 2)", "datetime that overflows", "batch update naming one missing row",
        "unknown foreign key", "CHECK: side not allowed"}]
    worst += [c for c in AT_DELAY if c.name in {"JSON nested 5,000 deep (object)", "null model name"}]
    sent = []
    for c in worst:  # send_task skips delay()'s checks, as a raw publish would
        data = c.args[2] if c.name != "JSON nested 5,000 deep (object)" else session(data=_deep_dict(200))
        sent.append(bench_platform.app.send_task(PERSIST, [c.args[0], c.args[1], data]))
    for result in sent:
        with pytest.raises(Exception):  # noqa: B017  (each is its own error class; the letters say which)
            result.get(timeout=60)
    letters = wait_for(lambda: len(dead_letters.list_letters(bench_platform.timber.db)) == len(sent) and
                       dead_letters.list_letters(bench_platform.timber.db), 20, "a dead letter per job")
    assert {letter.task_id for letter in letters} == {r.id for r in sent}
    assert worker.poll() is None, bench_platform.log_of(worker)
    assert bench_platform.task(PERSIST).delay("User", "create", USER).get(timeout=30)["count"] == 1


# -- model YAML: refused by `models validate` / at load, file, model and field named ------------
def _model(column_extra: str = "", index_where: str | None = None, check: str | None = None) -> str:
    where = f"\n    indexes:\n      - {{name: idx_q, columns: [qty], where: \"{index_where}\"}}" if index_where else ""
    check_line = f"\n        check: \"{check}\"" if check else ""
    return f"""
version: "1"
models:
  - name: Stock
    table_name: stock
    columns:
      - {{name: id, type: Integer, primary_key: true}}
      - name: qty
        type: Integer{check_line}{column_extra}{where}
"""


BAD_YAML = [
    ("check with a -- comment", _model(check="qty > 0 --"), "SQL comment"),
    ("check with a /* */ comment", _model(check="qty > 0 /* ( */ ) /* */"), "SQL comment"),
    ("check with a trailing comment and text", _model(check="qty > 0 -- and anything"), "SQL comment"),
    ("index where with a -- comment", _model(index_where="qty > 0 --"), "SQL comment"),
    ("index where with a /* comment", _model(index_where="qty > 0 /* x */"), "SQL comment"),
    ("check with a semicolon", _model(check="qty > 0; DROP TABLE stock"), "cannot read expression"),
    ("check naming another table", _model(check="qty > (SELECT 1 FROM users)"), "SELECT"),
    ("check with an unknown column", _model(check="amount > 0"), "amount"),
    ("unbalanced parenthesis", _model(check="(qty > 0"), "unbalanced"),
    ("empty check", _model(check=" "), ""),
    ("unknown column type", _model("\n        foreign_key: nowhere.id"), "nowhere"),
    ("ARRAY on SQLite", _model().replace("type: Integer\n", "type: ARRAY(Integer)\n", 1)
     .replace("- {name: id, type: Integer, primary_key: true}", "- {name: id, type: Integer, primary_key: true}"),
     "ARRAY needs PostgreSQL"),
]


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_hostile_model_yaml_is_refused_naming_file_model_and_field(tmp_path: Path, dialect: str) -> None:
    problems = []
    for n, (name, body, says) in enumerate(BAD_YAML):
        if says == "ARRAY needs PostgreSQL" and dialect == "postgresql":
            continue
        path = tmp_path / f"case_{n}.yaml"
        path.write_text(textwrap.dedent(body))
        try:
            ModelRegistry.from_files([path], app_name="timber", dialect=dialect)
        except ModelConfigErrors as exc:
            text = str(exc)
            if says not in text or path.name not in text or "'Stock'" not in text:
                problems.append(f"{name}: {text[:300]!r}")
        else:
            problems.append(f"{name}: loaded")
    assert not problems, "\n".join(problems)


BAD_BEAT = [
    ("unknown task", "entries:\n  x: {task: timber.nope, every: 5}", "unknown task 'timber.nope'"),
    ("two schedules", "entries:\n  x: {task: timber.maintenance.noop, every: 5, crontab: '* * * * *'}",
     "exactly one"),
    ("no schedule", "entries:\n  x: {task: timber.maintenance.noop}", "exactly one"),
    ("crontab with four fields", "entries:\n  x: {task: timber.maintenance.noop, crontab: '* * * *'}",
     "five fields"),
    ("bad crontab value", "entries:\n  x: {task: timber.maintenance.noop, crontab: '99 * * * *'}",
     "bad crontab"),
    ("negative every", "entries:\n  x: {task: timber.maintenance.noop, every: -1}", "greater than or equal to 1"),
    ("a queue option", "entries:\n  x: {task: timber.maintenance.noop, every: 5, options: {queue: q}}",
     "drop options.queue"),
    ("an unknown key", "entries:\n  x: {task: timber.maintenance.noop, every: 5, evry: 6}", "evry"),
    ("malformed YAML", "entries: [", "malformed YAML"),
]


def test_hostile_beat_entries_are_refused_naming_file_and_entry(tmp_path: Path) -> None:
    from timber_tasks.celery_app import app

    problems = []
    for n, (name, body, says) in enumerate(BAD_BEAT):
        path = tmp_path / f"beat_{n}.yaml"
        path.write_text(body)
        try:
            load_schedule(path, app)
        except ConfigError as exc:
            if says not in str(exc) or path.name not in str(exc):
                problems.append(f"{name}: {exc!s:.300}")
        else:
            problems.append(f"{name}: loaded")
    assert not problems, "\n".join(problems)


BAD_CLI = [
    (["dlq", "show", "abc"], 2, "valid integer"),
    (["dlq", "show", "999999"], 1, "no dead letter with id 999999"),
    (["dlq", "retry", "-1"], 2, "No such option: -1"),
    (["dlq", "retry", "424242"], 1, "no dead letter with id 424242"),
    (["keys", "rotate", "--batch-size", "0"], 2, "greater than or equal to 1"),
    (["models", "validate", "/no/such/folder"], 1, "does not exist"),
    (["worker", "--pool", "nosuch"], 1, "nosuch"),
    (["db", "check", "--database-url", "not a url"], 1, "URL"),
]


def test_hostile_command_line_arguments_fail_with_a_message_and_no_traceback(tmp_path: Path) -> None:
    runtime.initialize_timber(model_config_dirs=[ROOT / "model_configs"]).close()  # tables in the data dir
    problems = []
    for argv, code, says in BAD_CLI:
        done = subprocess.run([sys.executable, "-m", "timber_tasks.cli", *argv], cwd=ROOT, capture_output=True,
                              text=True, timeout=120)
        if done.returncode != code or says not in done.stderr or "Traceback" in done.stderr:
            problems.append(f"{argv}: exit {done.returncode}, {done.stderr[-300:]!r}")
    assert not problems, "\n".join(problems)


# -- raw messages no worker may die of --------------------------------------------------------
def _nested(levels: int) -> Any:
    value: Any = "x"
    for _ in range(levels):
        value = {"a": value}
    return {"app_name": "grove", "event_type": "deep", "properties": value}


def _raw(task_id: str, *, task: str | None = PERSIST, body: str | None = None, body_encoding: str = "utf-8",
         content_type: str = "application/x-timber-json") -> dict[str, Any]:
    headers: dict[str, Any] = {"lang": "py", "id": task_id, "root_id": task_id, "parent_id": None, "group": None,
                               "retries": 0, "timelimit": [None, None], "origin": "hostile", "eta": None,
                               "expires": None}
    if task is not None:
        headers["task"] = task
    if body is None:
        body = sealing.seal(json.dumps([["User", "create", USER], {}, {}]))
    return {"body": body, "content-encoding": "utf-8", "content-type": content_type, "headers": headers,
            "properties": {"body_encoding": body_encoding, "delivery_tag": uuid.uuid4().hex, "priority": 0,
                           "delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": "persistence"}}}


RAW_MESSAGES = {
    "unknown body_encoding": {"body_encoding": "rot13", "body": "b64:Zm9v"},
    "body that is not sealed JSON": {"body": "{not json"},
    "pickle content type": {"content_type": "application/x-python-serialize", "body": "gASVAAAAAAAAAAA="},
    "no task header": {"task": None},
    "unknown task": {"task": "timber.no_such_task"},
    "body of the wrong shape": {"body": sealing.seal(json.dumps({"args": 1}))},
    # decodes, but the worker cannot pickle it to its pool: the slot froze and the next job never ran
    "body nested 500 deep": {"body": sealing.seal(json.dumps([["TrackedEvent", "create", _nested(500)], {}, {}]))},
}


def test_a_worker_survives_every_malformed_message_and_keeps_each_as_a_dead_letter(
    bench_platform: Platform
) -> None:
    worker = bench_platform.start_worker(concurrency=1)
    ids = {name: f"raw-{n}-{uuid.uuid4().hex[:8]}" for n, name in enumerate(RAW_MESSAGES)}
    with bench_platform.app.connection_for_write() as conn:
        channel = conn.default_channel
        for name, options in RAW_MESSAGES.items():
            channel._put("persistence", _raw(ids[name], **options))

    def kept() -> set[str]:
        return {letter.task_id for letter in dead_letters.list_letters(bench_platform.timber.db)}

    wait_for(lambda: set(ids.values()) <= kept(), 30, "a dead letter per malformed message")
    assert worker.poll() is None, bench_platform.log_of(worker)
    assert bench_platform.task(PERSIST).delay("User", "create", USER).get(timeout=30)["count"] == 1
    assert worker.poll() is None
