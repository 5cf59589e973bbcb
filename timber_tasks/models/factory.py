"""Builds SQLAlchemy mapped classes from resolved model specs."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import Any, Protocol

from sqlalchemy import BigInteger, CheckConstraint, Column, Computed, ForeignKey, Index, Integer, event, text
from sqlalchemy.orm import DeclarativeBase, relationship

from timber_tasks.errors import ConfigError, ValidationError
from timber_tasks.models import validators
from timber_tasks.models.defaults import DEFAULT_FUNCTIONS
from timber_tasks.models.loader import ResolvedModel
from timber_tasks.models.spec import ColumnSpec, RelationshipSpec
from timber_tasks.models.types import parse_type

INVERSE = {
    "one-to-many": "many-to-one",
    "many-to-one": "one-to-many",
    "one-to-one": "one-to-one",
    "many-to-many": "many-to-many",
}


class FeaturePlugin(Protocol):
    """A feature block's hand in building models (features/ register one; models/ never import them)."""

    def column(self, m: ResolvedModel, name: str, attrs: dict[str, Any], keyring: Any) -> None:
        """Adjust the column `attrs[name]` of a model using the feature (swap its type, add columns)."""

    def install(self, cls: type[Any], m: ResolvedModel, keyring: Any) -> None:
        """Hook the built class (attribute and load events)."""


# YAML feature block name -> its plug-in, registered by the feature's module on import.
_plugins: dict[str, FeaturePlugin] = {}


def register_feature(block: str, plugin: FeaturePlugin) -> None:
    """Let the feature behind YAML block `block` take part in building every model that enables it."""
    _plugins[block] = plugin


def _plugins_of(m: ResolvedModel) -> list[FeaturePlugin]:
    found = []
    for block in ("encryption",):
        spec = getattr(m.spec, block)
        if spec is not None and spec.enabled:
            if block not in _plugins:
                # Building the model without it would store plaintext: refuse.
                raise ConfigError(f"model {m.name} enables {block!r}, but its plug-in is not loaded: "
                                  "import timber_tasks.features.encryption before building models")
            found.append(_plugins[block])
    return found


def make_base() -> type[DeclarativeBase]:
    """A fresh declarative base, so every registry has its own metadata and class names."""

    class Base(DeclarativeBase):
        pass

    return Base


class ModelFactory:
    """Turns resolved specs, taken in dependency order, into mapped classes on one base."""

    def __init__(self, base: type[DeclarativeBase], dialect: str | None = None,
                 keyring: Any = None) -> None:
        self.base = base
        self.dialect = dialect
        self.keyring = keyring  # None: encrypted fields refuse to read or write until keys are set
        self.classes: dict[str, type[Any]] = {}

    def build_all(self, models: list[ResolvedModel]) -> dict[str, type[Any]]:
        for m in models:
            self.classes[m.name] = self._build_class(m)
        for m in models:
            self._add_relationships(m, models)
        for m in models:
            _install_validators(self.classes[m.name], m)
            if m.spec.deprecated:
                _install_deprecation(self.classes[m.name], m)
            for plugin in _plugins_of(m):
                plugin.install(self.classes[m.name], m, self.keyring)
        return self.classes

    def _build_class(self, m: ResolvedModel) -> type[Any]:
        spec = m.spec
        parent: Any = self.classes[spec.inherits] if spec.inherits else self.base
        attrs: dict[str, Any] = {"timber_spec": m, "__doc__": spec.description}
        if m.inheritance == "joined" and not any(c.primary_key for c in m.columns):
            attrs.update(_key_to_parent(parent))
        plugins = _plugins_of(m)
        for col in m.columns:
            attrs[col.name] = self._build_column(col)
            for plugin in plugins:
                plugin.column(m, col.name, attrs, self.keyring)
        for comp in spec.computed:
            attrs[comp.name] = Column(comp.name, parse_type(comp.type, self.dialect),
                                      Computed(comp.expression, persisted=comp.persisted))
        mapper_args = _mapper_args(m)
        if mapper_args:
            attrs["__mapper_args__"] = mapper_args
        if m.inheritance == "single":
            # No table of its own: the constraints go onto the parent's table, by column object.
            cls: Any = type(spec.name, (parent,), attrs)
            for constraint in _constraints(m, lambda name: cls.__table__.c[name]):
                if isinstance(constraint, CheckConstraint):
                    cls.__table__.append_constraint(constraint)
            return cls
        attrs["__tablename__"] = m.table_name
        attrs["__table_args__"] = tuple(_constraints(m, str))
        return type(spec.name, (parent,), attrs)

    def _build_column(self, col: ColumnSpec) -> Column[Any]:
        args: list[Any] = []
        if col.foreign_key:
            args.append(ForeignKey(col.foreign_key, ondelete=col.ondelete))
        kwargs: dict[str, Any] = {
            "primary_key": col.primary_key,
            "unique": col.unique or any(v.type == "unique" for v in col.validators),
            "index": col.index,
            "comment": col.description,
        }
        if col.nullable is not None:
            kwargs["nullable"] = col.nullable
        if col.default is not None:
            kwargs["default"], server_default = _default(col.default)
            if server_default is not None:
                kwargs["server_default"] = server_default
        if col.onupdate is not None:
            kwargs["onupdate"] = DEFAULT_FUNCTIONS[col.onupdate]
        type_ = parse_type(col.type, self.dialect)
        if col.primary_key and isinstance(type_, BigInteger):
            # SQLite numbers rows only for INTEGER PRIMARY KEY; BIGINT would stay NULL there.
            type_ = type_.with_variant(Integer(), "sqlite")
        return Column(col.name, type_, *args, **kwargs)

    def _add_relationships(self, m: ResolvedModel, models: list[ResolvedModel]) -> None:
        cls = self.classes[m.name]
        declared = {x.name: {r.name for r in x.spec.relationships} for x in models}
        for rel in m.spec.relationships:
            setattr(cls, rel.name, self._relationship(cls, rel, rel.back_populates))
            if rel.back_populates and rel.back_populates not in declared[rel.model]:
                # The other side was not declared: add it, as the seeds' shared models expect.
                inverse = RelationshipSpec(
                    name=rel.back_populates, model=m.name, type=INVERSE[rel.type],  # type: ignore[arg-type]
                    back_populates=rel.name, secondary=rel.secondary,
                    foreign_key=rel.foreign_key,
                )
                declared[rel.model].add(rel.back_populates)
                target = self.classes[rel.model]
                setattr(target, inverse.name, self._relationship(target, inverse, rel.name))

    def _relationship(self, cls: type[Any], rel: RelationshipSpec, back: str | None) -> Any:
        kwargs: dict[str, Any] = {}
        if back:
            kwargs["back_populates"] = back
        if rel.secondary:
            kwargs["secondary"] = rel.secondary
        if rel.lazy:
            kwargs["lazy"] = rel.lazy
        if rel.cascade:
            kwargs["cascade"] = rel.cascade
        if rel.type in ("many-to-one", "one-to-one"):
            kwargs["uselist"] = False
        if rel.foreign_key:
            owner = cls if rel.foreign_key in cls.__table__.c else self.classes[rel.model]
            kwargs["foreign_keys"] = [owner.__table__.c[rel.foreign_key]]
        return relationship(rel.model, **kwargs)


def _key_to_parent(parent: Any) -> dict[str, Column[Any]]:
    """Joined inheritance: the child's primary key is a foreign key to the parent's."""
    return {
        pk.name: Column(pk.name, pk.type, ForeignKey(f"{pk.table.name}.{pk.name}", ondelete="CASCADE"),
                        primary_key=True)
        for pk in parent.__table__.primary_key.columns
    }


def _mapper_args(m: ResolvedModel) -> dict[str, Any]:
    spec = m.spec
    if spec.polymorphic and spec.polymorphic.enabled:
        return {"polymorphic_on": spec.polymorphic.on,
                "polymorphic_identity": spec.polymorphic_identity or spec.name}
    if spec.polymorphic_identity:
        return {"polymorphic_identity": spec.polymorphic_identity}
    return {}


def _constraints(m: ResolvedModel, column: Callable[[str], Any]) -> list[Any]:
    """Check constraints and indexes of a model; `column` turns a column name into what Index takes."""
    out: list[Any] = [
        CheckConstraint(col.check, name=f"ck_{m.table_name}_{col.name}"[:63])
        for col in m.columns if col.check
    ]
    for idx in m.indexes:
        where = {"postgresql_where": text(idx.where), "sqlite_where": text(idx.where)} if idx.where else {}
        name = idx.name or f"ix_{m.table_name}_{'_'.join(idx.columns)}"[:63]
        out.append(Index(name, *(column(c) for c in idx.columns), unique=idx.unique, **where))  # type: ignore[arg-type]
    return out


def _default(value: Any) -> tuple[Any, Any]:
    """Python default and, for scalar literals, a server default so migrations fill old rows."""
    if isinstance(value, str) and value in DEFAULT_FUNCTIONS:
        return DEFAULT_FUNCTIONS[value], None
    if isinstance(value, dict | list):
        return (lambda v=value: copy.deepcopy(v)), None
    if isinstance(value, bool):
        return value, text("true" if value else "false")
    if isinstance(value, int | float):
        return value, text(repr(value))
    if isinstance(value, str):
        return value, value
    return value, None



def _install_validators(cls: type[Any], m: ResolvedModel) -> None:
    for col in m.columns:
        checks = [
            validators.with_message(v, validators.build_check(v))
            for v in col.validators
            if v.type not in validators.CONSTRAINT_VALIDATORS
        ]
        if not checks:
            continue

        def on_set(target: Any, value: Any, oldvalue: Any, initiator: Any,
                   _checks: list[validators.Check] = checks, _field: str = col.name) -> None:
            if value is None:
                return
            for check in _checks:
                problem = check(value)
                if problem:
                    if _field in validators.encrypted_fields(type(target)):
                        problem = validators.redact(problem, value)
                    raise ValidationError(m.name, _field, problem)

        # propagate: a child model validates the columns it inherits
        event.listen(getattr(cls, col.name), "set", on_set, propagate=True)


def _install_deprecation(cls: type[Any], m: ResolvedModel) -> None:
    message = m.spec.deprecated_message or "it will be removed"

    def on_init(target: Any, args: Any, kwargs: Any) -> None:
        warnings.warn(f"model {m.name} is deprecated: {message}", DeprecationWarning, stacklevel=3)

    event.listen(cls, "init", on_init)
