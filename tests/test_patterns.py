"""Mixins, polymorphism, table name templates, computed columns, validators, deprecation, features."""

from __future__ import annotations

import decimal
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError

from timber_tasks import ModelConfigError, ValidationError, initialize_timber, register_validator

MIXED = """
version: "1"
mixins:
  - name: Audit
    columns:
      - {name: created_by, type: String(36)}
      - {name: created_at, type: DateTime, default: utcnow}
models:
  - name: Post
    table_name: posts
    mixins: [Audit]
    columns:
      - {name: id, type: Integer, primary_key: true}
"""


def test_mixin_columns_are_added_to_the_model(database_url: str, write_models: Callable[..., Path]) -> None:
    timber = initialize_timber(model_config_dirs=[write_models({"m.yaml": MIXED})], database_url=database_url)
    assert {"id", "created_by", "created_at"} <= set(timber.get_model("Post").__table__.c.keys())


POLY = """
version: "1"
models:
  - name: Content
    table_name: content
    polymorphic: {on: content_type}
    columns:
      - {name: id, type: Integer, primary_key: true}
      - {name: content_type, type: String(50)}
      - {name: title, type: String(255)}
  - name: Article
    inherits: Content
    polymorphic_identity: article
    columns:
      - {name: body, type: Text}
      - {name: word_count, type: Integer, check: "word_count >= 0"}
    indexes:
      - {name: idx_article_words, columns: [word_count]}
  - name: Video
    inherits: Content
    table_name: videos
    polymorphic_identity: video
    columns:
      - {name: duration_seconds, type: Integer}
"""


def test_polymorphic_models_load_as_their_subclass(database_url: str, write_models: Callable[..., Path]) -> None:
    timber = initialize_timber(model_config_dirs=[write_models({"m.yaml": POLY})], database_url=database_url)
    Content, Article, Video = (timber.get_model(n) for n in ("Content", "Article", "Video"))
    assert Article.__table__ is Content.__table__  # single-table: no table_name
    assert Video.__table__.name == "videos"  # joined: its own table keyed to content.id
    with timber.db.session_scope() as s:
        s.add_all([Article(id=1, title="a", body="text"), Video(id=2, title="v", duration_seconds=90)])
    with timber.db.session_scope() as s:
        rows = {c.id: c for c in s.query(Content).all()}
        assert type(rows[1]) is Article and rows[1].body == "text" and rows[1].content_type == "article"
        assert type(rows[2]) is Video and rows[2].duration_seconds == 90
    # The single-table child's index and check landed on the parent's table.
    assert "idx_article_words" in {ix["name"] for ix in inspect(timber.db.engine).get_indexes("content")}
    with pytest.raises(ValidationError, match=r"word_count.*check constraint") as refused, \
            timber.db.session_scope() as s:
        s.add(Article(id=3, title="neg", word_count=-1))
    assert isinstance(refused.value.__cause__, IntegrityError)  # the database refused it


def test_table_name_templates_use_the_app_name(tmp_path: Path, write_models: Callable[..., Path]) -> None:
    folder = write_models({"m.yaml": """
        version: "1"
        models:
          - name: SessionData
            table_name_template: "session_data_{app_name}"
            columns: [{name: id, type: Integer, primary_key: true}]
    """})
    timber = initialize_timber(app_name="canopy", model_config_dirs=[folder],
                               database_url=f"sqlite:///{tmp_path}/t.db")
    assert timber.get_model("SessionData").__tablename__ == "session_data_canopy"


def test_computed_columns_are_calculated_by_the_database(
    database_url: str, write_models: Callable[..., Path]
) -> None:
    folder = write_models({"m.yaml": """
        version: "1"
        models:
          - name: Product
            table_name: products
            columns:
              - {name: id, type: Integer, primary_key: true}
              - {name: price, type: "Numeric(10, 2)"}
              - {name: tax_rate, type: "Numeric(5, 2)"}
            computed:
              - {name: price_with_tax, expression: "price * (1 + tax_rate)", type: "Numeric(10, 2)"}
    """})
    timber = initialize_timber(model_config_dirs=[folder], database_url=database_url)
    Product = timber.get_model("Product")
    with timber.db.session_scope() as s:
        s.add(Product(id=1, price=decimal.Decimal("100.00"), tax_rate=decimal.Decimal("0.20")))
    with timber.db.session_scope() as s:
        assert decimal.Decimal(str(s.get(Product, 1).price_with_tax)) == decimal.Decimal("120.00")


VALIDATED = """
version: "1"
models:
  - name: Account
    table_name: accounts
    columns:
      - {name: id, type: Integer, primary_key: true}
      - name: email
        type: String(255)
        validators: [{type: email}, {type: unique}]
      - name: age
        type: Integer
        validators: [{type: range, min: 18, max: 120}]
      - name: username
        type: String(50)
        validators:
          - {type: regex, pattern: "^[a-z0-9_]+$"}
          - {type: length, min: 3, max: 20}
      - name: card
        type: String(20)
        validators: [{type: luhn}]
"""


def _luhn(value: str) -> bool:
    digits = [int(c) for c in value if c.isdigit()][::-1]
    total = sum(d if i % 2 == 0 else (d * 2 - 9 if d * 2 > 9 else d * 2) for i, d in enumerate(digits))
    return total % 10 == 0


@pytest.mark.parametrize(("field", "bad", "reason"), [
    ("email", "not-an-email", "not an email"),
    ("age", 12, "below the minimum 18"),
    ("age", 200, "above the maximum 120"),
    ("username", "Bad Name", "does not match"),
    ("username", "ab", "length 2 is below"),
    ("card", "4111111111111112", "failed validator 'luhn'"),
])
def test_validators_refuse_bad_values_naming_model_and_field(
    field: str, bad: object, reason: str, tmp_path: Path, write_models: Callable[..., Path]
) -> None:
    register_validator("luhn")(lambda v: _luhn(v))
    timber = initialize_timber(model_config_dirs=[write_models({"m.yaml": VALIDATED})],
                               database_url=f"sqlite:///{tmp_path}/t.db")
    Account = timber.get_model("Account")
    with pytest.raises(ValidationError, match=rf"Account\.{field}: .*{reason}"):
        Account(**{field: bad})
    account = Account(email="a@b.co", age=30, username="ada_l", card="4111111111111111")
    with pytest.raises(ValidationError):
        account.age = 5  # on every write, not only the constructor
    assert Account.__table__.c.email.unique


def test_an_unknown_validator_is_a_load_error(tmp_path: Path, write_models: Callable[..., Path]) -> None:
    with pytest.raises(ModelConfigError, match=r"'Account'.*'card'.*unknown validator 'luhn'"):
        initialize_timber(model_config_dirs=[write_models({"m.yaml": VALIDATED})],
                          database_url=f"sqlite:///{tmp_path}/t.db")


def test_deprecated_models_warn_on_use(tmp_path: Path, write_models: Callable[..., Path]) -> None:
    folder = write_models({"m.yaml": """
        version: "1"
        models:
          - name: OldModel
            table_name: old_table
            deprecated: true
            deprecated_message: Use NewModel instead
            columns: [{name: id, type: Integer, primary_key: true}]
    """})
    timber = initialize_timber(model_config_dirs=[folder], database_url=f"sqlite:///{tmp_path}/t.db")
    with pytest.warns(DeprecationWarning, match="OldModel is deprecated: Use NewModel instead"):
        OldModel = timber.get_model("OldModel")
    with pytest.warns(DeprecationWarning, match="OldModel is deprecated"):
        OldModel(id=1)


FEATURES = """
version: "1"
models:
  - name: Payment
    table_name: payments
    encryption: {enabled: true, fields: [card_number], searchable: [card_number]}
    caching: {enabled: true, ttl_seconds: 60, cache_key_format: "payment:{id}"}
    gdpr: {enabled: true, user_id_field: user_id, export_fields: [amount], anonymize_fields: [card_number]}
    vector_search: {enabled: true, content_field: memo, metadata_fields: [amount]}
    columns:
      - {name: id, type: Integer, primary_key: true}
      - {name: user_id, type: String(36)}
      - {name: card_number, type: String(255)}
      - {name: amount, type: "Numeric(10, 2)"}
      - {name: memo, type: Text}
"""


def test_feature_blocks_are_kept_on_the_model(tmp_path: Path, write_models: Callable[..., Path]) -> None:
    timber = initialize_timber(model_config_dirs=[write_models({"m.yaml": FEATURES})],
                               database_url=f"sqlite:///{tmp_path}/t.db")
    spec = timber.get_model("Payment").timber_spec.spec
    assert spec.encryption.fields == ("card_number",) and spec.caching.ttl_seconds == 60
    assert spec.gdpr.user_id_field == "user_id" and spec.vector_search.content_field == "memo"
    assert [m.__name__ for m in timber.registry.with_feature("caching")] == ["Payment"]


@pytest.mark.parametrize(("old", "new", "block"), [
    ("fields: [card_number]", "fields: [cvv]", "encryption.fields"),
    ("user_id_field: user_id", "user_id_field: owner", "gdpr.user_id_field"),
    ("export_fields: [amount]", "export_fields: [amount, currency]", "gdpr.export_fields"),
    ("content_field: memo", "content_field: body", "vector_search.content_field"),
    ("metadata_fields: [amount]", "metadata_fields: [region]", "vector_search.metadata_fields"),
])
def test_feature_blocks_may_only_name_existing_fields(
    old: str, new: str, block: str, tmp_path: Path, write_models: Callable[..., Path]
) -> None:
    folder = write_models({"m.yaml": FEATURES.replace(old, new)})
    with pytest.raises(ModelConfigError, match=rf"'Payment'.*{block} names"):
        initialize_timber(model_config_dirs=[folder], database_url=f"sqlite:///{tmp_path}/t.db")
