"""Rows of vector_search models into their collection: batched, deterministic ids, unchanged content skipped.

A point's id is uuid5(model, primary key), so a retried or redelivered job rewrites the same
point and never adds one. Its payload holds a hash of the embedding model and the content:
a row whose content is unchanged is not encoded again (a metadata-only change re-uses the stored
vector). A fingerprint of everything a point is made of (the row's columns and the model's
settings) lets a job find the rows it would write unchanged before building anything, reading one
value per point from the store, so a re-run costs microseconds a row. The payload never holds the
content itself, only ids and the YAML's metadata fields.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy import inspect as sa_inspect

from timber_tasks.embeddings.encoder import Encoder, get_encoder, set_threads
from timber_tasks.errors import ModelConfigError, ModelScopedError
from timber_tasks.features import isolation
from timber_tasks.stores.vectors import (
    APP_KEY,
    FINGERPRINT_KEY,
    SOURCE_KEY,
    USER_KEY,
    Marks,
    VectorPoint,
    VectorStore,
    vector_store,
)

POINT_NAMESPACE = uuid.UUID("6f1c2a4e-0d7b-5c39-9a8e-7b1d3c5e9f20")  # fixed forever: ids must not move
_NAMESPACE_BYTES = POINT_NAMESPACE.bytes
PK_KEY, MODEL_KEY = "pk", "model"  # payload keys; SOURCE_KEY holds the hash of encoder and content
SHARED_APP = "shared"  # payload app of a shared model's rows
READ_CHUNK = 1000  # rows per database read (an IN list) and per store round in a reindex
POINT_FORMAT = 1  # part of every fingerprint: a change to how points are built raises it, so all are rewritten


class EmbeddingError(ModelScopedError):
    """Raised when a model has no usable vector_search block or its rows cannot be embedded."""


@dataclass(frozen=True)
class VectorModel:
    """What indexing needs of one model with vector_search."""

    model: type[Any]
    name: str
    collection: str
    content_field: str
    metadata_fields: tuple[str, ...]
    user_field: str | None
    app: str | None  # owning app (the YAML file's `app:`); None when shared
    encoder: Encoder
    pk_key: str

    @property
    def indexed_fields(self) -> list[str]:
        return [MODEL_KEY, *self.metadata_fields]

    def point_id(self, pk: Any) -> str:
        return point_id(self.name, pk)


def point_id(model_name: str, pk: Any) -> str:
    """uuid5(POINT_NAMESPACE, "model:pk") as text, built directly: 3x faster than uuid.uuid5 and str()."""
    raw = bytearray(hashlib.sha1(_NAMESPACE_BYTES + f"{model_name}:{pk}".encode()).digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x50  # version 5
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def vector_model(timber: Any, name: str) -> VectorModel:
    """The indexing view of a model; EmbeddingError without vector_search, ConfigError when its model is missing."""
    model = timber.registry.get(name)
    resolved = model.timber_spec
    block = resolved.spec.vector_search
    if block is None or not block.enabled:
        raise EmbeddingError("has no vector_search block enabled in its YAML, so it has no vectors to "
                             "embed or search", model=name)
    encrypted = set(resolved.spec.encryption.fields) if resolved.spec.encryption else set()
    leaking = sorted(encrypted & set(block.metadata_fields))
    if leaking:
        raise ModelConfigError(f"vector_search.metadata_fields {leaking} are encrypted: a payload would hold "
                               "their plaintext; leave them out", file=resolved.file, model=name)
    keys = [c.key for c in sa_inspect(model).primary_key]
    if len(keys) != 1:
        raise EmbeddingError(f"has a composite primary key {keys}: vector_search needs a single-column key",
                             model=name)
    user_field = resolved.spec.gdpr.user_id_field if resolved.spec.gdpr else None
    if user_field is None and "user_id" in resolved.all_columns:
        user_field = "user_id"
    int8 = block.int8 if block.int8 is not None else timber.settings.embedding_int8
    encoder = get_encoder(block.embedding_model, int8=int8, model=name, file=resolved.file)
    return VectorModel(model, name, block.collection or resolved.table_name, block.content_field,
                       tuple(block.metadata_fields), user_field, resolved.app, encoder, keys[0])


def vector_models(timber: Any) -> list[VectorModel]:
    """Every model with vector_search; resolving them is the start-up check of their embedding models."""
    return [vector_model(timber, m.timber_spec.name) for m in timber.registry.with_feature("vector_search")]


def content_text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def _plain(value: Any) -> Any:
    return value if value is None or isinstance(value, str | int | float | bool) else str(value)


class Indexer:
    """Embeds rows of one model into its collection through one store."""

    def __init__(self, timber: Any, name: str, store: VectorStore | None = None) -> None:
        self.timber = timber
        self.vm = vector_model(timber, name)
        self.store = store or vector_store(timber.settings)
        self.batch_size = timber.settings.embedding_batch_size
        set_threads(timber.settings.embedding_threads or None)
        self.store.ensure_collection(self.vm.collection, self.vm.encoder.dimension, self.vm.indexed_fields)
        vm, scope = self.vm, self.vm.model.timber_spec.spec.app_scope
        # The columns a point needs, read as tuples by position (a re-run handles a row in microseconds).
        self.names = list(dict.fromkeys([vm.pk_key, vm.content_field, *([vm.user_field] if vm.user_field else []),
                                         *vm.metadata_fields, *([scope.column] if scope else [])]))
        self.at = {name: i for i, name in enumerate(self.names)}
        # Every input of payload() and of the vector besides the row's values, each by its role (a column
        # can play two, e.g. a metadata field that becomes the user field): a change here changes every
        # fingerprint, so the points are rewritten. Scope values in declared order: the first match wins.
        self.salt = repr((POINT_FORMAT, vm.encoder.key, vm.name, vm.app, vm.pk_key, vm.content_field, vm.user_field,
                          vm.metadata_fields, self.names,
                          (scope.column, [(app, list(values)) for app, values in scope.values.items()])
                          if scope else None))

    def fingerprint(self, row: Any) -> str:
        """Of the row's columns (str, numbers, dates, JSON: their repr is exact) and the salt."""
        return _digest(f"{self.salt}\0{tuple(row)!r}")

    def columns(self) -> Any:
        """SELECT of the columns a point needs (self.names, in order), not whole entities."""
        return select(*(getattr(self.vm.model, n) for n in self.names))

    def payload(self, row: Any) -> dict[str, Any]:
        vm, at = self.vm, self.at
        payload: dict[str, Any] = {PK_KEY: _plain(row[at[vm.pk_key]]), MODEL_KEY: vm.name,
                                   USER_KEY: _plain(row[at[vm.user_field]]) if vm.user_field else None,
                                   APP_KEY: vm.app or self._scope_app(row)}
        for name in vm.metadata_fields:
            payload[name] = _plain(row[at[name]])
        return payload

    def _scope_app(self, row: Any) -> str:
        scope = self.vm.model.timber_spec.spec.app_scope
        if scope is not None:
            value = row[self.at[scope.column]]
            for app, values in scope.values.items():
                if value in values:
                    return str(app)
        return SHARED_APP

    def embed_rows(self, rows: list[Any], marks: Mapping[str, Marks] | None = None) -> dict[str, Any]:
        """Embed these rows of columns() (unchanged ones skipped); empty content removes a row's vector.

        `marks`: the stored points' marks when the caller has read them already, else asked of the store.
        """
        vm, encoder = self.vm, self.vm.encoder
        result = new_result(vm)
        pk_at, content_at = self.at[vm.pk_key], self.at[vm.content_field]
        keyed = [(vm.point_id(row[pk_at]), row, self.fingerprint(row)) for row in rows]
        if marks is None:
            marks = self.store.marks(vm.collection, [pid for pid, _, _ in keyed]) if keyed else {}
        empty: list[str] = []
        to_encode, same_content = [], []  # (point id, text, payload)
        for pid, row, fingerprint in keyed:
            stored = marks.get(pid)
            if stored is not None and stored.fingerprint == fingerprint:
                result["unchanged"] += 1
                continue
            text = content_text(row[content_at]).strip()
            if not text:
                empty.append(pid)
                result["empty"].append(_plain(row[pk_at]))
                continue
            payload = self.payload(row)
            payload[SOURCE_KEY] = _digest(f"{encoder.key}\0{text}")
            payload[FINGERPRINT_KEY] = fingerprint
            if stored is not None and stored.source == payload[SOURCE_KEY]:
                same_content.append((pid, text, payload))
            else:
                to_encode.append((pid, text, payload))
        if empty:
            self.store.delete(vm.collection, empty)
        points: list[VectorPoint] = []
        if same_content:  # metadata changed, content did not: keep the vector, rewrite the payload
            stored_points = self.store.get(vm.collection, [w[0] for w in same_content], with_vectors=True)
            for pid, text, payload in same_content:
                kept = stored_points.get(pid)
                if kept is None or not kept.vector:  # removed meanwhile: embed it after all
                    to_encode.append((pid, text, payload))
                else:
                    points.append(VectorPoint(pid, kept.vector, payload))
                    result["payload_only"] += 1
        if to_encode:
            texts = [t for _, t, _ in to_encode]
            long = set(encoder.overlong(texts))
            for i in sorted(long):
                result["truncated"].append(to_encode[i][2][PK_KEY])
            vectors = encoder.encode(texts, batch_size=self.batch_size)
            points.extend(VectorPoint(pid, vectors[i].tolist(), payload)
                          for i, (pid, _, payload) in enumerate(to_encode))
            result["embedded"] += len(to_encode)
        if points:
            self.store.upsert(vm.collection, points)
        return result

    def embed_ids(self, ids: Iterable[Any]) -> dict[str, Any]:
        """Embed the rows with these keys; keys with no row (deleted meanwhile) lose their vector.

        All rows are read first, then checked against the store and written in one go each: every
        store call may open the embedded shard (tens of ms), so a job makes as few as it can.
        """
        keys = list(dict.fromkeys(ids))
        rows = self.read(keys)
        total = self.embed_rows(rows) if rows else new_result(self.vm)
        found = {str(r[self.at[self.vm.pk_key]]) for r in rows}
        gone = [k for k in keys if str(k) not in found]
        if gone:
            merge(total, self.remove_ids(gone))
        return total

    def read(self, keys: list[Any]) -> list[Any]:
        """The rows of columns() with these keys (those that exist), in IN lists of READ_CHUNK."""
        column = getattr(self.vm.model, self.vm.pk_key)
        rows: list[Any] = []
        for start in range(0, len(keys), READ_CHUNK):
            with self.timber.db.session_scope() as session:
                rows.extend(session.execute(self.columns().where(column.in_(keys[start:start + READ_CHUNK]))))
        return rows

    def remove_ids(self, ids: Iterable[Any]) -> dict[str, Any]:
        keys = list(ids)
        result = new_result(self.vm)
        self.store.delete(self.vm.collection, [self.vm.point_id(k) for k in keys])
        result["removed"] = len(keys)
        return result

    def sync(self, on_progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        """The whole table: every row embedded if changed, vectors of rows no longer there removed.

        Changes are judged against the points themselves (one scroll, first), not a backend's quicker
        list of them, so a reindex also mends a list that is out of step (a shard restored from a backup).
        """
        vm = self.vm
        total = new_result(vm)
        keys: dict[str, Any] = {}  # point id -> its row's key, for the orphan check
        stored: dict[str, Marks] = {}
        for point in self.store.scroll(vm.collection, {MODEL_KEY: vm.name}):
            stored[point.id], keys[point.id] = Marks.of(point.payload), point.payload.get(PK_KEY)
        seen: set[str] = set()
        with self.timber.db.session_scope() as session:
            count = session.scalar(select(func.count()).select_from(vm.model)) or 0
            done = 0
            for page in _pages(session.execute(self.columns().execution_options(yield_per=READ_CHUNK)), READ_CHUNK):
                seen.update(vm.point_id(r[self.at[vm.pk_key]]) for r in page)
                merge(total, self.embed_rows(page, stored))
                done += len(page)
                if on_progress:
                    on_progress(done, int(count))
        orphans = [pid for pid in stored if pid not in seen]  # points written meanwhile are not in `stored`
        if orphans:  # a row deleted and made again while the table was read is no orphan: look again
            back = {vm.point_id(r[self.at[vm.pk_key]]) for r in self.read([keys[pid] for pid in orphans])}
            orphans = [pid for pid in orphans if pid not in back]
        self.store.delete(vm.collection, orphans)
        total["removed"] += len(orphans)
        return total


def _pages(rows: Iterable[Any], size: int) -> Iterator[list[Any]]:
    page: list[Any] = []
    for row in rows:
        page.append(row)
        if len(page) >= size:
            yield page
            page = []
    if page:
        yield page


def new_result(vm: VectorModel) -> dict[str, Any]:
    return {"model": vm.name, "collection": vm.collection, "embedded": 0, "unchanged": 0, "payload_only": 0,
            "removed": 0, "empty": [], "truncated": []}


def merge(total: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    for key in ("embedded", "unchanged", "payload_only", "removed"):
        total[key] += part[key]
    total["empty"].extend(part["empty"])
    total["truncated"].extend(part["truncated"])
    return total


def searchable_by(app: str, vm: VectorModel) -> bool:
    """An app searches its own models' collections and the shared ones; the platform app all of them."""
    return vm.app is None or vm.app == app or app == isolation.PLATFORM_APP
