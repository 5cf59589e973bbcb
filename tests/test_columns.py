"""Every column type and option of the YAML format, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import decimal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Numeric, inspect, text
from sqlalchemy.exc import IntegrityError

from timber_tasks import ModelConfigError, ValidationError, initialize_timber, register_type

ALL_TYPES = """
version: "1"
models:
  - name: Everything
    table_name: everything
    columns:
      - {name: id, type: Integer, primary_key: true}
      - {name: s, type: String(20)}
      - {name: t, type: Text}
      - {name: big, type: BigInteger}
      - {name: f, type: Float}
      - {name: n, type: "Numeric(10, 2)"}
      - {name: b, type: Boolean}
      - {name: ts, type: DateTime}
      - {name: d, type: Date}
      - {name: tm, type: Time}
      - {name: j, type: JSON}
      - {name: jb, type: JSONB}
      - {name: u, type: UUID}
      - {name: raw, type: LargeBinary}
      - {name: money, type: MoneyAmount}
"""


def test_every_built_in_type_round_trips(database_url: str, write_models: Callable[..., Path]) -> None:
    register_type("MoneyAmount", Numeric(12, 2))
    timber = initialize_timber(model_config_dirs=[write_models({"m.yaml": ALL_TYPES})],
                               database_url=database_url)
    Everything = timber.get_model("Everything")
    values = dict(
        id=1, s="hello", t="x" * 5000, big=2**40, f=1.5, n=decimal.Decimal("12.34"), b=True,
        ts=dt.datetime(2024, 5, 1, 12, 30), d=dt.date(2024, 5, 1), tm=dt.time(9, 15),
        j={"a": [1, 2]}, jb={"k": "v"}, u="0b7d3c3e-6f1e-4f43-9b3a-3f0a7e8f0c11", raw=b"\x00\x01",
        money=decimal.Decimal("99.95"),
    )
    with timber.db.session_scope() as s:
        s.add(Everything(**values))
    with timber.db.session_scope() as s:
        row = s.get(Everything, 1)
        for key, value in values.items():
            assert getattr(row, key) == value, key


def test_jsonb_is_real_jsonb_on_postgresql(postgres_url: str, write_models: Callable[..., Path]) -> None:
    register_type("MoneyAmount", Numeric(12, 2))
    timber = initialize_timber(model_config_dirs=[write_models({"m.yaml": ALL_TYPES})],
                               database_url=postgres_url)
    with timber.db.engine.connect() as conn:
        kind = conn.execute(text(
            "SELECT data_type FROM information_schema.columns WHERE table_name='everything' AND column_name='jb'"
        )).scalar()
    assert kind == "jsonb"


ARRAY_MODEL = """
version: "1"
models:
  - name: Tagged
    table_name: tagged
    columns:
      - {name: id, type: Integer, primary_key: true}
      - {name: tags, type: ARRAY(String(20))}
"""


def test_array_works_on_postgresql(postgres_url: str, write_models: Callable[..., Path]) -> None:
    timber = initialize_timber(model_config_dirs=[write_models({"m.yaml": ARRAY_MODEL})],
                               database_url=postgres_url)
    Tagged = timber.get_model("Tagged")
    with timber.db.session_scope() as s:
        s.add(Tagged(id=1, tags=["growth", "tech"]))
    with timber.db.session_scope() as s:
        assert s.get(Tagged, 1).tags == ["growth", "tech"]


def test_array_on_sqlite_is_a_clear_error(tmp_path: Path, write_models: Callable[..., Path]) -> None:
    with pytest.raises(ModelConfigError) as info:
        initialize_timber(model_config_dirs=[write_models({"m.yaml": ARRAY_MODEL})],
                          database_url=f"sqlite:///{tmp_path}/t.db")
    message = str(info.value)
    assert "ARRAY needs PostgreSQL" in message and "'Tagged'" in message and "'tags'" in message


OPTIONS = """
version: "1"
models:
  - name: Owner
    table_name: owners
    columns:
      - {name: id, type: String(36), primary_key: true, default: uuid4}
      - {name: code, type: String(10), unique: true, nullable: false}
  - name: Item
    table_name: items
    columns:
      - {name: id, type: String(36), primary_key: true, default: uuid4}
      - name: owner_id
        type: String(36)
        foreign_key: owners.id
        ondelete: CASCADE
        index: true
      - {name: status, type: String(20), default: active, nullable: false}
      - {name: qty, type: Integer, default: 0, check: "qty >= 0"}
      - {name: flag, type: Boolean, default: false}
      - {name: payload, type: JSON, default: {}}
      - {name: created_at, type: DateTime, default: utcnow}
      - {name: updated_at, type: DateTime, default: utcnow, onupdate: utcnow}
      - {name: note, type: Text, description: "Free text for people"}
"""


@pytest.fixture
def options_timber(database_url: str, write_models: Callable[..., Path]):  # type: ignore[no-untyped-def]
    return initialize_timber(model_config_dirs=[write_models({"m.yaml": OPTIONS})],
                             database_url=database_url)


def test_defaults_fill_in_uuid_timestamp_and_literals(options_timber) -> None:  # type: ignore[no-untyped-def]
    Owner, Item = options_timber.get_model("Owner"), options_timber.get_model("Item")
    with options_timber.db.session_scope() as s:
        owner = Owner(code="A")
        s.add(owner)
        s.flush()
        s.add(Item(owner_id=owner.id))
    with options_timber.db.session_scope() as s:
        item = s.query(Item).one()
        assert len(item.id) == 36 and item.status == "active" and item.qty == 0
        assert item.flag is False and item.payload == {}
        assert abs((dt.datetime.now(dt.UTC).replace(tzinfo=None) - item.created_at).total_seconds()) < 60


def test_onupdate_refreshes_the_timestamp(options_timber) -> None:  # type: ignore[no-untyped-def]
    Item = options_timber.get_model("Item")
    with options_timber.db.session_scope() as s:
        s.add(Item(id="i1"))
    with options_timber.db.session_scope() as s:
        before = s.get(Item, "i1").updated_at
    time.sleep(0.01)
    with options_timber.db.session_scope() as s:
        s.get(Item, "i1").status = "done"
    with options_timber.db.session_scope() as s:
        assert s.get(Item, "i1").updated_at > before


def test_not_null_unique_and_check_are_enforced_by_the_database(options_timber) -> None:  # type: ignore[no-untyped-def]
    Owner, Item = options_timber.get_model("Owner"), options_timber.get_model("Item")
    with options_timber.db.session_scope() as s:
        s.add(Owner(code="A"))
    # The database refuses each; the session names the column (its IntegrityError is the cause).
    for bad, column in ((Owner(code="A"), "Owner.code"), (Owner(code=None), "Owner.code"), (Item(qty=-1), "Item.qty")):
        with pytest.raises(ValidationError, match=column) as refused, options_timber.db.session_scope() as s:
            s.add(bad)
        assert isinstance(refused.value.__cause__, IntegrityError)


def test_foreign_keys_are_enforced_and_cascade_on_delete(options_timber) -> None:  # type: ignore[no-untyped-def]
    Owner, Item = options_timber.get_model("Owner"), options_timber.get_model("Item")
    with pytest.raises(ValidationError, match="Item.owner_id") as refused, options_timber.db.session_scope() as s:
        s.add(Item(owner_id="no-such-owner"))
    assert isinstance(refused.value.__cause__, IntegrityError)
    with options_timber.db.session_scope() as s:
        s.add(Owner(id="o1", code="B"))
        s.flush()
        s.add(Item(owner_id="o1"))
    with options_timber.db.session_scope() as s:
        s.execute(text("DELETE FROM owners WHERE id = 'o1'"))
    with options_timber.db.session_scope() as s:
        assert s.query(Item).count() == 0


def test_index_and_description_reach_the_schema(options_timber) -> None:  # type: ignore[no-untyped-def]
    insp = inspect(options_timber.db.engine)
    assert any(ix["column_names"] == ["owner_id"] for ix in insp.get_indexes("items"))
    Item = options_timber.get_model("Item")
    assert Item.__table__.c.note.comment == "Free text for people"
    if options_timber.db.dialect == "postgresql":
        note = next(c for c in insp.get_columns("items") if c["name"] == "note")
        assert note["comment"] == "Free text for people"
