"""The YAML model format as pydantic schemas: unknown keys and wrong shapes are rejected here."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    field_validator,
    model_validator,
)

# PostgreSQL truncates identifiers at 63 bytes; we refuse rather than truncate.
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

# Attribute names SQLAlchemy's declarative base or our registry own on every model class.
RESERVED_ATTRIBUTES = frozenset(
    {"metadata", "registry", "query", "timber_spec", "__table__", "__tablename__", "__mapper__"}
)


def check_identifier(value: str) -> str:
    if not IDENTIFIER.match(value):
        raise ValueError(
            f"{value!r} is not a safe SQL identifier "
            "(letters, digits and _, starting with a letter or _, at most 63 characters)"
        )
    return value


Identifier = Annotated[str, AfterValidator(check_identifier)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ValidatorSpec(Strict):
    type: str
    min: float | None = None
    max: float | None = None
    pattern: str | None = None
    message: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("pattern")
    @classmethod
    def _pattern_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"pattern {value!r} is not a valid regular expression: {exc}") from exc
        return value


class ColumnSpec(Strict):
    name: Identifier
    type: str
    primary_key: bool = False
    nullable: bool | None = None
    unique: bool = False
    index: bool = False
    foreign_key: str | None = None
    ondelete: Literal["CASCADE", "SET NULL", "RESTRICT", "NO ACTION", "SET DEFAULT"] | None = None
    default: Any = None
    onupdate: Any = None
    check: str | None = None
    description: str | None = None
    validators: tuple[ValidatorSpec, ...] = ()


    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in RESERVED_ATTRIBUTES:
            raise ValueError(
                f"column name {value!r} is reserved by SQLAlchemy models; "
                f"rename it (for example {value + '_json'!r})"
            )
        return value

    @field_validator("foreign_key")
    @classmethod
    def _fk_shape(cls, value: str | None) -> str | None:
        if value is not None:
            parts = value.split(".")
            if len(parts) != 2:
                raise ValueError(f"foreign_key {value!r} must be 'table.column'")
            for part in parts:
                check_identifier(part)
        return value



class IndexSpec(Strict):
    columns: tuple[str, ...] = Field(min_length=1)
    name: Identifier | None = None
    unique: bool = False
    where: str | None = None



RelationshipType = Literal["one-to-many", "many-to-one", "one-to-one", "many-to-many"]
LazyMode = Literal["select", "joined", "selectin", "subquery", "raise", "noload", "immediate"]


class RelationshipSpec(Strict):
    name: Identifier
    model: str
    type: RelationshipType = "many-to-one"
    back_populates: str | None = None
    secondary: str | None = None
    lazy: LazyMode | None = None
    foreign_key: str | None = None  # column on this model, when several lead to the target
    cascade: str | None = None



class ComputedSpec(Strict):
    name: Identifier
    expression: str
    type: str
    persisted: bool = True



class PolymorphicSpec(Strict):
    enabled: bool = True
    on: str

    @model_validator(mode="before")
    @classmethod
    def _yaml_on_key(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare `on:` key as the boolean True; the seeds write it that way.
        if isinstance(value, dict) and True in value:
            value = {("on" if k is True else k): v for k, v in value.items()}
        return value


class EncryptionSpec(Strict):
    enabled: bool = True
    fields: tuple[str, ...] = Field(min_length=1)
    algorithm: Literal["fernet"] = "fernet"
    searchable: tuple[str, ...] = ()  # fields that also get a keyed-hash column for equality lookup


class CachingSpec(Strict):
    enabled: bool = True
    ttl_seconds: PositiveInt = 300
    cache_key_format: str | None = None
    max_entries: PositiveInt = 10_000
    warm_keys: tuple[str, ...] = ()


# Article 6(1) GDPR: the lawful bases a model's processing may rest on.
LegalBasis = Literal["consent", "contract", "legal_obligation", "vital_interests", "public_task",
                     "legitimate_interests"]


class GdprSpec(Strict):
    enabled: bool = True
    user_id_field: str
    export_fields: tuple[str, ...] = ()  # the CSV of an export; the JSON Lines file has every column
    anonymize_fields: tuple[str, ...] = ()
    erasure: Literal["delete", "anonymize"] = "delete"
    # Relationships whose rows belong to the subject too (exported and erased with this model's rows).
    include: tuple[str, ...] = ()
    # What Article 15(1) says the subject is told, per model; copied into every export's manifest.
    purpose: str | None = None
    legal_basis: LegalBasis | None = None
    retention: str | None = None
    recipients: tuple[str, ...] = ()
    source: str | None = None


class VectorSearchSpec(Strict):
    enabled: bool = True
    content_field: str
    embedding_model: str | None = None
    metadata_fields: tuple[str, ...] = ()
    collection: str | None = None
    int8: bool | None = None  # int8-quantized encoder; None: the TIMBER_EMBEDDING_INT8 setting decides


class AppScopeSpec(Strict):
    """Which values of a column each app owns (e.g. session types per app)."""

    column: str
    values: dict[str, tuple[str, ...]]


class MixinSpec(Strict):
    name: Identifier
    columns: tuple[ColumnSpec, ...] = Field(min_length=1)
    indexes: tuple[IndexSpec, ...] = ()


class ModelSpec(Strict):
    name: Identifier
    table_name: Identifier | None = None
    table_name_template: str | None = None
    description: str | None = None
    deprecated: bool = False
    deprecated_message: str | None = None
    mixins: tuple[str, ...] = ()
    inherits: str | None = None
    polymorphic: PolymorphicSpec | None = None
    polymorphic_identity: str | None = None
    columns: tuple[ColumnSpec, ...] = ()
    computed: tuple[ComputedSpec, ...] = ()
    indexes: tuple[IndexSpec, ...] = ()
    relationships: tuple[RelationshipSpec, ...] = ()
    encryption: EncryptionSpec | None = None
    caching: CachingSpec | None = None
    gdpr: GdprSpec | None = None
    vector_search: VectorSearchSpec | None = None
    app_scope: AppScopeSpec | None = None



class FileSpec(Strict):
    version: str
    description: str | None = None
    depends: tuple[str, ...] = ()
    app: str | None = None  # None: shared by every app
    mixins: tuple[MixinSpec, ...] = ()
    models: tuple[ModelSpec, ...] = ()

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int | float) else value
