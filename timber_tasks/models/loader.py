"""Reads model YAML files, resolves mixins, inheritance and table names, and checks the whole set.

Nothing is built here: the output is a list of resolved specs in dependency order, or a
ModelConfigErrors listing every problem with its file, model and field.
"""

from __future__ import annotations

import graphlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml
from sqlalchemy import JSON, String

from timber_tasks.errors import ModelConfigError, ModelConfigErrors
from timber_tasks.models import sql_expressions, validators
from timber_tasks.models.defaults import DEFAULT_FUNCTIONS
from timber_tasks.models.spec import (
    ColumnSpec,
    FileSpec,
    IndexSpec,
    MixinSpec,
    ModelSpec,
    check_identifier,
)
from timber_tasks.models.types import TypeParseError, parse_type

# libyaml's loader is several times faster than the pure-Python one and reads the same YAML.
YamlLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class ResolvedModel:
    """One model with its mixins expanded and its table settled."""

    spec: ModelSpec
    file: str
    app: str | None
    table_name: str
    columns: tuple[ColumnSpec, ...]
    indexes: tuple[IndexSpec, ...]
    inheritance: Literal["single", "joined"] | None = None
    all_columns: tuple[str, ...] = field(default=())  # own + inherited, for checks

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass
class _Collector:
    errors: list[ModelConfigError] = field(default_factory=list)

    def add(self, message: str, *, file: str | None = None, model: str | None = None,
            field_: str | None = None) -> None:
        self.errors.append(ModelConfigError(message, file=file, model=model, field=field_))


def find_model_files(dirs: Iterable[Path | str]) -> list[Path]:
    """Every *.yaml / *.yml below the dirs, in a stable order; a missing dir is an error."""
    files: list[Path] = []
    for d in dirs:
        path = Path(d)
        if not path.is_dir():
            raise ModelConfigError(f"model config directory {str(path)!r} does not exist")
        files.extend(sorted(p for p in path.rglob("*") if p.suffix in {".yaml", ".yml"}))
    return files


def load_model_files(
    paths: Sequence[Path], *, app_name: str, dialect: str | None = None
) -> list[ResolvedModel]:
    """Parse, resolve and check every file; return models in dependency order or raise."""
    errors = _Collector()
    specs = _parse_files(paths, errors)
    _check_file_depends(specs, errors)
    mixins = _collect_mixins(specs, errors)
    models = _resolve_models(specs, mixins, app_name, errors)
    _check_models(models, dialect, errors)  # in the same round: every error of the set at once
    if errors.errors:
        raise ModelConfigErrors(errors.errors)
    return _dependency_order(models)


def _parse_files(paths: Sequence[Path], errors: _Collector) -> dict[str, FileSpec]:
    specs: dict[str, FileSpec] = {}
    for path in paths:
        name = str(path)
        try:
            with path.open(encoding="utf-8") as stream:  # a named stream: YAML errors name the file
                raw = yaml.load(stream, Loader=YamlLoader)
        except yaml.YAMLError as exc:
            errors.add(f"malformed YAML: {exc}", file=name)
            continue
        except OSError as exc:
            errors.add(f"cannot read file: {exc}", file=name)
            continue
        except UnicodeDecodeError as exc:
            errors.add(f"not UTF-8 text (byte {exc.start}): save the file as UTF-8", file=name)
            continue
        if not isinstance(raw, dict):
            errors.add("a model file must be a mapping with 'version' and 'models'", file=name)
            continue
        try:
            specs[name] = FileSpec.model_validate(raw)
        except pydantic.ValidationError as exc:
            for err in exc.errors():
                model, fld = _locate(raw, err["loc"])
                where = ".".join(str(p) for p in err["loc"])
                errors.add(f"{where}: {err['msg']}", file=name, model=model, field_=fld)
    return specs


def _locate(raw: dict[str, Any], loc: tuple[Any, ...]) -> tuple[str | None, str | None]:
    """Name the model and field a pydantic error location points into."""
    model = fld = None
    try:
        if loc[:1] in (("models",), ("mixins",)) and len(loc) > 1:
            entry = raw[loc[0]][loc[1]]
            model = entry.get("name") if isinstance(entry, dict) else None
            if len(loc) > 3 and loc[2] in ("columns", "computed", "relationships"):
                item = entry[loc[2]][loc[3]]
                fld = item.get("name") if isinstance(item, dict) else None
            elif len(loc) > 2:
                fld = str(loc[2])
    except (KeyError, IndexError, TypeError, AttributeError):
        pass
    return model, fld


def _check_file_depends(specs: dict[str, FileSpec], errors: _Collector) -> None:
    graph: dict[str, set[str]] = {}
    for file, spec in specs.items():
        graph[file] = set()
        for dep in spec.depends:
            # A depends entry names a file by its path tail: "user_models.yaml", "shared/x.yaml".
            tail = Path(dep).parts
            matches = [f for f in specs if Path(f).parts[-len(tail):] == tail]
            if not matches:
                errors.add(f"depends on {dep!r}, which is not among the loaded files", file=file)
            elif len(matches) > 1:
                errors.add(f"depends on {dep!r}, which matches several files: "
                           f"{', '.join(matches)}; give more of its path", file=file)
            elif matches[0] != file:
                graph[file].add(matches[0])
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        errors.add("file dependency cycle: " + " -> ".join(exc.args[1]))


def _collect_mixins(specs: dict[str, FileSpec], errors: _Collector) -> dict[str, MixinSpec]:
    mixins: dict[str, MixinSpec] = {}
    where: dict[str, str] = {}
    for file, spec in specs.items():
        for mixin in spec.mixins:
            if mixin.name in mixins:
                errors.add(f"mixin {mixin.name!r} is also defined in {where[mixin.name]!r}", file=file)
            mixins[mixin.name] = mixin
            where[mixin.name] = file
    return mixins


def _resolve_models(
    specs: dict[str, FileSpec], mixins: dict[str, MixinSpec], app_name: str, errors: _Collector
) -> list[ResolvedModel]:
    declared: dict[str, tuple[str, ModelSpec, str | None]] = {}
    for file, fspec in specs.items():
        for m in fspec.models:
            if m.name in declared:
                errors.add(f"model {m.name!r} is also defined in {declared[m.name][0]!r}",
                           file=file, model=m.name)
                continue
            declared[m.name] = (file, m, fspec.app)

    resolved: dict[str, ResolvedModel] = {}

    def resolve(name: str, chain: tuple[str, ...] = ()) -> ResolvedModel | None:
        if name in resolved:
            return resolved[name]
        file, m, app = declared[name]
        if name in chain:
            errors.add("inheritance cycle: " + " -> ".join((*chain, name)), file=file, model=name)
            return None
        columns, indexes = _expand_mixins(m, mixins, file, errors)
        table = _table_name(m, app_name, file, errors)
        inheritance: Literal["single", "joined"] | None = None
        inherited: tuple[str, ...] = ()
        if m.inherits:
            if m.inherits not in declared:
                errors.add(f"inherits unknown model {m.inherits!r}", file=file, model=name,
                           field_="inherits")
                return None
            parent = resolve(m.inherits, (*chain, name))
            if parent is None:
                return None
            inherited = parent.all_columns
            inheritance = "joined" if table else "single"
            table = table or parent.table_name
        elif table is None:
            errors.add("needs 'table_name' or 'table_name_template'", file=file, model=name)
            return None
        elif not columns:
            errors.add("has no columns", file=file, model=name, field_="columns")
        model = ResolvedModel(
            spec=m, file=file, app=app, table_name=table, columns=tuple(columns),
            indexes=tuple(indexes), inheritance=inheritance,
            all_columns=tuple(dict.fromkeys([*inherited, *(c.name for c in columns)])),
        )
        resolved[name] = model
        return model

    for name in declared:
        resolve(name)
    return list(resolved.values())


def _expand_mixins(m: ModelSpec, mixins: dict[str, MixinSpec], file: str,
                   errors: _Collector) -> tuple[list[ColumnSpec], list[IndexSpec]]:
    """The model's own columns and indexes, then each mixin's, in the order named."""
    columns, indexes = list(m.columns), list(m.indexes)
    for mixin_name in m.mixins:
        mixin = mixins.get(mixin_name)
        if mixin is None:
            errors.add(f"unknown mixin {mixin_name!r}", file=file, model=m.name, field_="mixins")
            continue
        own = {c.name for c in columns}
        for col in mixin.columns:
            if col.name in own:
                errors.add(f"column {col.name!r} is defined by the model and by mixin {mixin_name!r}",
                           file=file, model=m.name, field_=col.name)
            else:
                columns.append(col)
        indexes.extend(mixin.indexes)
    return columns, indexes


def _table_name(m: ModelSpec, app_name: str, file: str, errors: _Collector) -> str | None:
    if m.table_name and m.table_name_template:
        errors.add("give 'table_name' or 'table_name_template', not both", file=file, model=m.name)
        return None
    if not m.table_name_template:
        return m.table_name
    try:
        name = m.table_name_template.format(app_name=app_name)
        return check_identifier(name)
    except (KeyError, IndexError, ValueError) as exc:
        errors.add(f"table_name_template {m.table_name_template!r}: {exc} "
                   "(only {app_name} may be used)", file=file, model=m.name,
                   field_="table_name_template")
        return None


def _check_models(models: list[ResolvedModel], dialect: str | None, errors: _Collector) -> None:
    by_name = {m.name: m for m in models}
    tables: dict[str, ResolvedModel] = {}
    table_columns: dict[str, set[str]] = {}
    for m in models:
        if m.inheritance != "single" and m.table_name in tables:
            other = tables[m.table_name]
            errors.add(f"table {m.table_name!r} is also used by model {other.name!r} "
                       f"in {other.file!r}", file=m.file, model=m.name)
        if m.inheritance != "single":
            tables.setdefault(m.table_name, m)
        table_columns.setdefault(m.table_name, set()).update(c.name for c in m.columns)
        table_columns[m.table_name].update(c.name for c in m.spec.computed)
    for m in models:
        _check_model(m, by_name, tables, table_columns, dialect, errors)


def _check_model(
    m: ResolvedModel,
    by_name: dict[str, ResolvedModel],
    tables: dict[str, ResolvedModel],
    table_columns: dict[str, set[str]],
    dialect: str | None,
    errors: _Collector,
) -> None:
    def err(message: str, fld: str | None = None) -> None:
        errors.add(message, file=m.file, model=m.name, field_=fld)

    spec = m.spec
    seen: set[str] = set()
    for col in m.columns:
        if col.name in seen:
            err("column is defined twice", col.name)
        seen.add(col.name)
        _check_column(col, m, tables, table_columns, dialect, err)
    columns = set(m.all_columns)
    for comp in spec.computed:
        if comp.name in columns:
            err("computed column has the name of a column", comp.name)
        try:
            parse_type(comp.type, dialect)
            sql_expressions.check_expression(comp.expression, columns)
        except (TypeParseError, ValueError) as exc:
            err(str(exc), comp.name)
    if m.inheritance is None and not any(c.primary_key for c in m.columns):
        err("has no primary key column")
    for idx in m.indexes:
        for c in idx.columns:
            if c not in columns:
                err(f"index {idx.name or idx.columns!r} names unknown column {c!r}", c)
        if idx.where:
            try:
                sql_expressions.check_expression(idx.where, columns)
            except ValueError as exc:
                err(f"index {idx.name or idx.columns!r}: {exc}")
    _check_inheritance(m, by_name, err)
    _check_relationships(m, by_name, tables, err)
    _check_features(m, columns, err, _column_specs(m, by_name))


def _check_column(col: ColumnSpec, m: ResolvedModel, tables: dict[str, ResolvedModel],
                  table_columns: dict[str, set[str]], dialect: str | None, err: Any) -> None:
    try:
        parse_type(col.type, dialect)
    except TypeParseError as exc:
        err(str(exc), col.name)
    if col.foreign_key:
        table, _, target_col = col.foreign_key.partition(".")
        if table not in tables:
            err(f"foreign_key {col.foreign_key!r}: no model has table {table!r}", col.name)
        elif target_col not in table_columns[table]:
            err(f"foreign_key {col.foreign_key!r}: table {table!r} has no column {target_col!r}",
                col.name)
    elif col.ondelete:
        err("ondelete needs a foreign_key", col.name)
    if col.onupdate is not None and col.onupdate not in DEFAULT_FUNCTIONS:
        err(f"onupdate must be one of {sorted(DEFAULT_FUNCTIONS)}, got {col.onupdate!r}", col.name)
    if col.check:
        try:
            sql_expressions.check_expression(col.check, set(m.all_columns))
        except ValueError as exc:
            err(f"check: {exc}", col.name)
    for v in col.validators:
        if v.type in validators.CONSTRAINT_VALIDATORS:
            continue
        try:
            validators.build_check(v)
        except ValueError as exc:
            err(str(exc), col.name)


def _check_inheritance(m: ResolvedModel, by_name: dict[str, ResolvedModel], err: Any) -> None:
    spec = m.spec
    if spec.polymorphic and spec.polymorphic.on not in m.all_columns:
        err(f"polymorphic.on names unknown column {spec.polymorphic.on!r}", "polymorphic")
    if spec.inherits:
        root = by_name[spec.inherits]
        while root.spec.inherits:
            root = by_name[root.spec.inherits]
        if not (root.spec.polymorphic and root.spec.polymorphic.enabled):
            err(f"inherits {spec.inherits!r}, whose root {root.name!r} has no 'polymorphic' block",
                "inherits")
        if not spec.polymorphic_identity:
            err("a model that inherits needs 'polymorphic_identity'", "polymorphic_identity")
        if m.inheritance == "single":
            for col in m.columns:
                if col.primary_key or col.nullable is False:
                    err("single-table inheritance: child columns must be nullable and not "
                        "primary keys (give the child a table_name for joined inheritance)",
                        col.name)


def _check_relationships(m: ResolvedModel, by_name: dict[str, ResolvedModel],
                         tables: dict[str, ResolvedModel], err: Any) -> None:
    names = set(m.all_columns)
    for rel in m.spec.relationships:
        if rel.name in names:
            err("relationship has the name of a column", rel.name)
        target = by_name.get(rel.model)
        if target is None:
            err(f"relationship to unknown model {rel.model!r}", rel.name)
            continue
        if rel.type == "many-to-many" and not rel.secondary:
            err("many-to-many needs 'secondary' (the association table)", rel.name)
        if rel.secondary and rel.secondary not in tables:
            err(f"secondary table {rel.secondary!r} is not the table of any model", rel.name)
        if rel.foreign_key and rel.foreign_key not in names and rel.foreign_key not in set(
            target.all_columns
        ):
            err(f"foreign_key {rel.foreign_key!r} is not a column of {m.name} or {target.name}",
                rel.name)
        if rel.back_populates and rel.back_populates in set(target.all_columns):
            err(f"back_populates {rel.back_populates!r} is a column of {target.name}", rel.name)


def _column_specs(m: ResolvedModel, by_name: dict[str, ResolvedModel]) -> dict[str, tuple[ColumnSpec, ResolvedModel]]:
    """The model's columns with those it inherits, each with the model that declares it."""
    chain = [m]
    while chain[-1].spec.inherits and chain[-1].spec.inherits in by_name and len(chain) <= len(by_name):
        chain.append(by_name[chain[-1].spec.inherits])
    return {c.name: (c, model) for model in reversed(chain) for c in model.columns}


def _check_encryption(m: ResolvedModel, columns: set[str], err: Any,
                      specs: dict[str, tuple[ColumnSpec, ResolvedModel]]) -> None:
    enc = m.spec.encryption
    assert enc is not None
    for f in enc.searchable:
        if f not in enc.fields:
            err(f"encryption.searchable names {f!r}, which is not in encryption.fields", f)
        if f + "_hash" in columns:
            err(f"encryption.searchable {f!r} needs a column {f + '_hash'!r} for its lookup hash, "
                "and the model already has one", f)
    for f in enc.fields:
        if f not in specs:
            continue
        col, owner = specs[f]
        owner_enc = owner.spec.encryption
        if owner is not m and not (owner_enc is not None and owner_enc.enabled and f in owner_enc.fields):
            # The column lives in the parent's mapping: only the parent can make it store ciphertext.
            err(f"encrypts {f!r}, which it inherits from {owner.name}; list it in {owner.name}'s "
                "encryption.fields instead", f)
            continue
        try:
            sql_type = parse_type(col.type)
        except TypeParseError:
            continue  # reported with the column
        # By what the type is, not its name: a registered type over String or JSON encrypts fine.
        plain = getattr(sql_type, "impl_instance", sql_type)
        if not isinstance(plain, String | JSON):
            err(f"encryption supports String, Text and JSON columns (or types built on them), "
                f"not {col.type}", f)


def _check_features(m: ResolvedModel, columns: set[str], err: Any,
                    specs: dict[str, tuple[ColumnSpec, ResolvedModel]]) -> None:
    spec = m.spec
    named: list[tuple[str, Iterable[str]]] = []
    if spec.encryption:
        named.append(("encryption.fields", spec.encryption.fields))
        named.append(("encryption.searchable", spec.encryption.searchable))
        _check_encryption(m, columns, err, specs)
    if spec.gdpr:
        named.append(("gdpr.user_id_field", [spec.gdpr.user_id_field]))
        named.append(("gdpr.export_fields", spec.gdpr.export_fields))
        named.append(("gdpr.anonymize_fields", spec.gdpr.anonymize_fields))
        _check_gdpr(m, err)
    if spec.vector_search:
        named.append(("vector_search.content_field", [spec.vector_search.content_field]))
        named.append(("vector_search.metadata_fields", spec.vector_search.metadata_fields))
    if spec.app_scope:
        named.append(("app_scope.column", [spec.app_scope.column]))
    if spec.caching and spec.caching.cache_key_format:
        try:
            spec.caching.cache_key_format.format(id="x", model=m.name, table=m.table_name)
        except (KeyError, IndexError, ValueError) as exc:
            err(f"caching.cache_key_format may use {{id}}, {{model}} and {{table}}: {exc}",
                "caching")
    for block, fields in named:
        for f in fields:
            if f not in columns:
                err(f"{block} names {f!r}, which is not a column of {m.name}", f)


def _check_gdpr(m: ResolvedModel, err: Any) -> None:
    gdpr = m.spec.gdpr
    assert gdpr is not None
    if gdpr.erasure == "anonymize" and not gdpr.anonymize_fields:
        err("gdpr.erasure is 'anonymize' but gdpr.anonymize_fields is empty: list the fields to blank", "gdpr")
    keys = {c.name for c in m.columns if c.primary_key}
    for f in gdpr.anonymize_fields:
        if f in keys:
            err(f"gdpr.anonymize_fields names the primary key {f!r}: a key cannot be anonymized", f)
    relationships = {r.name: r for r in m.spec.relationships}
    for name in gdpr.include:
        rel = relationships.get(name)
        if rel is None:
            err(f"gdpr.include names {name!r}, which is not a relationship of {m.name}", name)
        elif rel.type not in ("one-to-many", "one-to-one") or rel.secondary:
            err(f"gdpr.include {name!r} is {rel.type}: only rows that point at this model "
                "(one-to-many, one-to-one) belong to its subject", name)


def _dependency_order(models: list[ResolvedModel]) -> list[ResolvedModel]:
    """Parents and foreign-key targets first; a cycle is an error naming its models."""
    by_table = {m.table_name: m.name for m in models if m.inheritance != "single"}
    graph: dict[str, set[str]] = {m.name: set() for m in models}
    for m in models:
        if m.spec.inherits:
            graph[m.name].add(m.spec.inherits)
        for col in m.columns:
            if col.foreign_key:
                target = by_table[col.foreign_key.split(".")[0]]
                if target != m.name and not _is_ancestor(target, m, models):
                    graph[m.name].add(target)
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        cycle = exc.args[1]
        first = next(m for m in models if m.name == cycle[0])
        raise ModelConfigErrors([ModelConfigError(
            "dependency cycle through foreign keys: " + " -> ".join(cycle)
            + " (make one of the foreign keys part of a separate association model)",
            file=first.file, model=first.name)]) from exc
    by_name = {m.name: m for m in models}
    return [by_name[n] for n in order]


def _is_ancestor(name: str, m: ResolvedModel, models: list[ResolvedModel]) -> bool:
    parents = {x.name: x.spec.inherits for x in models}
    current = m.spec.inherits
    while current:
        if current == name:
            return True
        current = parents.get(current)
    return False
