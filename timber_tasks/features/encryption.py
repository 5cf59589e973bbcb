"""Field encryption in the column type: MultiFernet keys, keyed-hash lookups and key rotation.

The cipher lives in an SQLAlchemy TypeDecorator, so every path that writes through the
model (services, Celery persistence jobs, plain ORM code, Core inserts on the table)
encrypts; none can store plaintext by mistake.

Searchable fields get a `<field>_hash` column: HMAC-SHA256 of the plaintext under a
key derived (HKDF-SHA256, info "timber-search") from a Fernet key. Writes use the
newest key; lookups ask for the hashes under every configured key, so equality lookups
keep working while `rotate_encryption_keys` rewrites the hashes under the newest key.
No second secret to manage: whoever may read the field may also look it up.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Column, String, Text, event, select, type_coerce, update
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.types import JSON, TypeDecorator

from timber_tasks.errors import ConfigError, DecryptionError
from timber_tasks.features.writes import PREPARED, before_write
from timber_tasks.models.factory import register_feature

log = logging.getLogger("timber_tasks.encryption")

HASH_SUFFIX = "_hash"


class KeyRing:
    """The configured Fernet keys: the first encrypts, every one decrypts."""

    def __init__(self, keys: Sequence[str | bytes]) -> None:
        if not keys:
            raise ConfigError("no encryption key given: set TIMBER_ENCRYPTION_KEYS "
                              "(create one with `timber-tasks keys generate`)")
        try:
            self.fernets = [Fernet(k) for k in keys]
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"TIMBER_ENCRYPTION_KEYS holds a key that is not a Fernet key: {exc} "
                              "(keys are 32 url-safe base64-encoded bytes; make one with "
                              "`timber-tasks keys generate`)") from None
        self.multi = MultiFernet(self.fernets)
        self.newest = self.fernets[0]
        raw = [k.encode() if isinstance(k, str) else k for k in keys]
        self._raw = raw
        self._hash_keys = [_derive_hash_key(k) for k in raw]

    def derived_keys(self, purpose: bytes) -> list[bytes]:
        """One 32-byte key per Fernet key (newest first), derived with HKDF for a purpose: no second secret."""
        return [HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(k) for k in self._raw]

    def encrypt(self, data: bytes) -> str:
        return self.newest.encrypt(data).decode("ascii")

    def decrypt(self, token: str) -> bytes:
        return self.multi.decrypt(token.encode("ascii"))

    def is_current(self, token: str) -> bool:
        """Whether the newest key made this token (rotation skips those rows)."""
        try:
            self.newest.decrypt(token.encode("ascii"))
        except InvalidToken:
            return False
        return True

    def search_hash(self, plain: Any) -> str:
        """The lookup hash written beside the ciphertext (newest key)."""
        return _hmac(self._hash_keys[0], plain)

    def search_hashes(self, plain: Any) -> list[str]:
        """The hashes under every key, so lookups find rows not yet rotated."""
        return [_hmac(k, plain) for k in self._hash_keys]

    def __repr__(self) -> str:
        return f"KeyRing(<{len(self.fernets)} key(s)>)"


def generate_key() -> str:
    return Fernet.generate_key().decode("ascii")


def _derive_hash_key(fernet_key: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"timber-search").derive(fernet_key)


def _canonical(plain: Any) -> bytes:
    if isinstance(plain, str):
        return plain.encode("utf-8")
    return json.dumps(plain, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _hmac(key: bytes, plain: Any) -> str:
    return hmac.new(key, _canonical(plain), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Undecryptable:
    """What the column type returns for a token no key opens; the ORM load hook turns it into an error.

    The type sees one value, not the row; the load hook sees the instance and so names its id.
    """

    model: str
    field: str

    def __repr__(self) -> str:
        return f"<undecryptable {self.model}.{self.field}>"


class EncryptedType(TypeDecorator[Any]):
    """Stores Fernet tokens in a TEXT column; reads back str (String/Text) or JSON values."""

    impl = Text
    cache_ok = True

    def __init__(self, model: str, field: str, kind: str = "text", length: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.field = field
        self.kind = kind  # "text" or "json"
        self.length = length  # the plaintext limit, checked by validate_record
        self.keyring: KeyRing | None = None  # set by the factory; not part of the SQL cache key

    @property
    def plain_type(self) -> Any:
        """The type the values have in Python, for records.validate_record's converters."""
        return JSON() if self.kind == "json" else (String(self.length) if self.length else Text())

    def _ring(self) -> KeyRing:
        if self.keyring is None:
            raise ConfigError(f"model {self.model} encrypts {self.field!r} but no encryption key is "
                              "configured: set TIMBER_ENCRYPTION_KEYS")
        return self.keyring

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        if value is None:
            return None
        if isinstance(value, Undecryptable):
            raise DecryptionError(self.model, self.field, reason="refusing to write back a value never decrypted")
        data = json.dumps(value).encode("utf-8") if self.kind == "json" else str(value).encode("utf-8")
        return self._ring().encrypt(data)

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        if value is None:
            return None
        try:
            plain = self._ring().decrypt(value)
        except InvalidToken:
            return Undecryptable(self.model, self.field)
        text = plain.decode("utf-8")
        return json.loads(text) if self.kind == "json" else text

    def copy(self, **kw: Any) -> EncryptedType:
        clone = EncryptedType(self.model, self.field, self.kind, self.length)
        clone.keyring = self.keyring
        return clone


def encrypted_column_type(model: str, field: str, plain: Any, keyring: KeyRing | None) -> EncryptedType:
    """The column type the factory uses for a field listed in `encryption.fields`."""
    kind = "json" if isinstance(plain, JSON) or isinstance(getattr(plain, "impl_instance", None), JSON) else "text"
    typ = EncryptedType(model, field, kind, getattr(plain, "length", None))
    typ.keyring = keyring
    return typ


def hash_column(field: str) -> Column[Any]:
    return Column(field + HASH_SUFFIX, String(64), index=True,
                  comment=f"HMAC-SHA256 of {field}, for equality lookup")


def install_encryption_hooks(cls: type[Any], model: str, fields: Sequence[str],
                             searchable: Sequence[str], keyring: KeyRing | None) -> None:
    """Keep hash columns in step with their fields, and name the row of an unreadable value."""
    for field in searchable:
        def on_set(target: Any, value: Any, oldvalue: Any, initiator: Any, _field: str = field) -> None:
            if keyring is None:
                raise ConfigError(f"model {model} encrypts {_field!r} but no encryption key is configured")
            setattr(target, _field + HASH_SUFFIX, None if value is None else keyring.search_hash(value))

        # propagate: a child model's rows keep their inherited hash current too
        event.listen(getattr(cls, field), "set", on_set, propagate=True)

    def check_loaded(target: Any, *_: Any) -> None:
        state = target.__dict__
        for field in fields:
            if isinstance(state.get(field), Undecryptable):
                ident = sa_inspect(target).identity
                row_id = ident[0] if ident and len(ident) == 1 else ident
                raise DecryptionError(model, field, row_id)

    event.listen(cls, "load", check_loaded, propagate=True)
    event.listen(cls, "refresh", check_loaded, propagate=True)


def searchable_fields(model: type[Any]) -> list[str]:
    """The searchable encrypted fields of a model, its parents' included."""
    fields: list[str] = []
    for klass in model.__mro__:
        resolved = klass.__dict__.get("timber_spec")
        enc = resolved.spec.encryption if resolved is not None else None
        if enc is not None and enc.enabled:
            fields.extend(f for f in enc.searchable if f not in fields)
    return fields


def hash_rows(model: type[Any], rows: list[dict[str, Any]]) -> None:
    """Before a bulk or Core write: set `<field>_hash` beside every searchable field a row writes."""
    fields = searchable_fields(model)
    if not fields:
        return
    columns = sa_inspect(model).columns
    for field in fields:
        keyring: KeyRing | None = getattr(columns[field].type, "keyring", None)
        for row in rows:
            if field not in row:
                continue
            if keyring is None:
                raise ConfigError(f"model {model.__name__} encrypts {field!r} but no encryption key is configured")
            value = row[field]
            row[field + HASH_SUFFIX] = None if value is None else keyring.search_hash(value)


before_write(hash_rows, name="searchable-hashes")


class EncryptionPlugin:
    """The `encryption` block's part in building models (registered with the model factory)."""

    def column(self, m: Any, name: str, attrs: dict[str, Any], keyring: KeyRing | None) -> None:
        enc = m.spec.encryption
        if name in enc.fields:
            # Same column, its type swapped for the cipher: no path can write plaintext.
            attrs[name].type = encrypted_column_type(m.name, name, attrs[name].type, keyring)
        if name in enc.searchable:
            attrs[name + HASH_SUFFIX] = hash_column(name)

    def install(self, cls: type[Any], m: Any, keyring: KeyRing | None) -> None:
        enc = m.spec.encryption
        install_encryption_hooks(cls, m.name, enc.fields, enc.searchable, keyring)


register_feature("encryption", EncryptionPlugin())


def lookup_clause(model: type[Any], field: str, value: Any) -> Any:
    """A WHERE clause matching rows whose searchable encrypted `field` equals `value`."""
    spec = model.timber_spec.spec
    if spec.encryption is None or field not in spec.encryption.searchable:
        raise ConfigError(f"model {spec.name}: {field!r} is not in encryption.searchable, "
                          "so it has no hash column to look it up by")
    keyring: KeyRing | None = model.__table__.c[field].type.keyring
    if keyring is None:
        raise ConfigError(f"model {spec.name} encrypts {field!r} but no encryption key is configured")
    return getattr(model, field + HASH_SUFFIX).in_(keyring.search_hashes(value))


@dataclass
class RotationReport:
    models: int = 0
    rows_seen: int = 0
    values_rotated: int = 0
    batches: int = 0


def rotate_encryption_keys(timber: Any, batch_size: int = 500,
                           progress: Callable[[str, int, int], None] | None = None) -> RotationReport:
    """Re-encrypt every encrypted field of every model under the newest key, in batches.

    Resumable: a row whose tokens the newest key already opens is skipped, and each batch
    commits on its own, so a rerun after an interruption picks up where it stopped. An
    update only lands if the token is still the one read, so a concurrent write is never
    overwritten. Hash columns are rewritten under the newest key too. Afterwards the old
    key can be dropped from TIMBER_ENCRYPTION_KEYS. (Celery wrapper: the platform's
    maintenance task calls this.)
    """
    if getattr(timber.db, "role", None) is not None:
        # Row-level security would hide other apps' rows, which would then never be rotated.
        raise ConfigError(f"key rotation must see every row, but this Timber acts as role {timber.db.role!r}: "
                          "run it with initialize_timber(app_role=False) (the CLI does)")
    report = RotationReport()
    for model in timber.registry.with_feature("encryption"):
        report.models += 1
        _rotate_model(timber, model, batch_size, report, progress)
    log.info("key rotation done: %s", report)
    return report


def _rotate_model(timber: Any, model: type[Any], batch_size: int, report: RotationReport,
                  progress: Callable[[str, int, int], None] | None) -> None:
    spec = model.timber_spec.spec
    table = model.__table__
    fields = list(spec.encryption.fields)
    searchable = set(spec.encryption.searchable)
    pk = list(table.primary_key.columns)
    keyring: KeyRing = table.c[fields[0]].type._ring()
    raw = [type_coerce(table.c[f], Text()).label(f) for f in fields]
    last: tuple[Any, ...] | None = None
    while True:
        query = select(*pk, *raw).order_by(*pk).limit(batch_size)
        if last is not None:
            query = query.where(_after(pk, last))
        with timber.db.session_scope() as session:
            rows = session.execute(query).all()
            for row in rows:
                report.values_rotated += _rotate_row(session, table, pk, row, fields, searchable, keyring,
                                                     spec.name)
        report.rows_seen += len(rows)
        if rows:
            report.batches += 1
            last = tuple(rows[-1][: len(pk)])
            if progress:
                progress(spec.name, report.rows_seen, report.values_rotated)
        if len(rows) < batch_size:
            return


def _after(pk: list[Any], last: tuple[Any, ...]) -> Any:
    from sqlalchemy import tuple_

    return tuple_(*pk) > tuple_(*last) if len(pk) > 1 else pk[0] > last[0]


def _rotate_row(session: Any, table: Any, pk: list[Any], row: Any, fields: list[str], searchable: set[str],
                keyring: KeyRing, model: str) -> int:
    values: dict[str, Any] = {}
    guards = [c == row[i] for i, c in enumerate(pk)]
    row_id = row[0] if len(pk) == 1 else tuple(row[: len(pk)])
    for field in fields:
        token = getattr(row, field)
        if token is None or keyring.is_current(token):
            continue
        try:
            plain = keyring.decrypt(token)
        except InvalidToken:
            raise DecryptionError(model, field, row_id) from None
        values[field] = keyring.encrypt(plain)
        if field in searchable:
            kind = table.c[field].type.kind
            text = plain.decode("utf-8")
            values[field + HASH_SUFFIX] = keyring.search_hash(json.loads(text) if kind == "json" else text)
        guards.append(type_coerce(table.c[field], Text()) == token)
    if not values:
        return 0
    raw_values = {table.c[k]: type_coerce(v, Text()) if k in fields else v for k, v in values.items()}
    # Tokens go in raw and the hashes are computed above: the after-write step need not prepare this row.
    session.execute(update(table).where(*guards).values(raw_values), execution_options={PREPARED: True})
    return sum(1 for k in values if k in fields)
