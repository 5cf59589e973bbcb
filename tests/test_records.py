"""validate_record(): JSON data checked and converted before it reaches the database."""

from __future__ import annotations

import datetime as dt
import decimal
from pathlib import Path
from typing import Any

import pytest

from timber_tasks import ValidationError, initialize_timber, to_jsonable, validate_record

from .conftest import ROOT


@pytest.fixture
def timber(tmp_path: Path):  # type: ignore[no-untyped-def]
    return initialize_timber(model_config_dirs=[ROOT / "model_configs"], database_url=f"sqlite:///{tmp_path}/t.db")


def test_json_values_become_column_types(timber: Any) -> None:
    Order = timber.get_model("Order")
    data = validate_record(Order, {"user_id": "u1", "symbol": "AAPL", "order_type": "limit", "side": "buy",
                                   "quantity": 10, "price": "187.25", "created_at": "2024-05-01T12:00:00Z"})
    assert data["price"] == decimal.Decimal("187.25")
    assert data["created_at"] == dt.datetime(2024, 5, 1, 12, 0)


@pytest.mark.parametrize(("data", "field", "reason"), [
    ({"nope": 1}, "nope", "unknown field"),
    ({"quantity": "ten"}, "quantity", "expected an integer"),
    ({"quantity": 0}, "quantity", "below the minimum"),
    ({"symbol": None}, "symbol", "may not be null"),
    ({"symbol": "X" * 11}, "symbol", "the column holds 10"),
    ({"price": "abc"}, "price", "'abc'"),
    ({"created_at": "yesterday"}, "created_at", "yesterday"),
])
def test_bad_fields_are_named_with_their_model(timber: Any, data: dict[str, Any], field: str,
                                               reason: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_record(timber.get_model("Order"), data, partial=True)
    assert info.value.model == "Order" and info.value.field == field and reason in str(info.value)


def test_a_create_needs_every_required_field(timber: Any) -> None:
    with pytest.raises(ValidationError, match=r"Order\.(user_id|symbol|order_type|side|quantity): is required"):
        validate_record(timber.get_model("Order"), {"symbol": "AAPL"})


def test_to_jsonable_gives_plain_data(timber: Any) -> None:
    User = timber.get_model("User")
    with timber.db.session_scope() as s:
        user = User(email="a@b.co", username="abc")
        s.add(user)
    data = to_jsonable(user)
    assert data["email"] == "a@b.co" and isinstance(data["created_at"], str)
