"""The data subject, and the keyed hash that is all the platform keeps of a subject once erased."""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from timber_tasks.errors import ConfigError, TimberError

# HKDF purpose of the subject-hash keys (from TIMBER_GDPR_SUBJECT_KEY and from each Fernet key).
SUBJECT_HASH_PURPOSE = b"timber-gdpr-subject"
ID_CHARS = r"A-Za-z0-9_.\-"  # what user ids are made of (uuids, slugs, numbers): no word boundary inside
ERASED_MARK = "erased-"  # anonymized text starts with this, so verify can tell it from personal data


class GdprError(TimberError):
    """Raised when a GDPR export or erasure cannot run as asked (the message says what to change)."""


class OutputExistsError(GdprError, FileExistsError):
    """Raised when an export would overwrite a file (pass --force / force=True to replace it)."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"{path} exists: choose another --out or pass --force to replace it")


class SubjectHasher:
    """HMAC-SHA256 of subject ids. The key that writes: the first of TIMBER_GDPR_SUBJECT_KEY when set (not
    rotated with the Fernet keys), else one derived from the newest Fernet key. Every other key still matches, so hashes
    written before a rotation or before the subject key was set are found. Each key has an id,
    kept beside the hashes in the erasure ledger, so a replay can tell a hash no key matches."""

    def __init__(self, keyring: Any, subject_keys: tuple[str, ...] = ()) -> None:
        if keyring is None and not subject_keys:
            raise ConfigError("GDPR records keep subjects only as keyed hashes, under TIMBER_GDPR_SUBJECT_KEY "
                              "or a key derived from TIMBER_ENCRYPTION_KEYS: set one "
                              "(`timber-tasks keys generate` makes a key)")
        labelled = [(f"TIMBER_GDPR_SUBJECT_KEY #{n}", _derive(k.encode("utf-8")))
                    for n, k in enumerate(subject_keys, 1)]
        fernet = keyring.derived_keys(SUBJECT_HASH_PURPOSE) if keyring is not None else []
        labelled += [(f"TIMBER_ENCRYPTION_KEYS #{n}", k) for n, k in enumerate(fernet, 1)]
        self._labelled = labelled
        self._keys = [k for _, k in labelled]
        self.uses_subject_key = bool(subject_keys)
        self._first_fernet = len(subject_keys)  # subject keys first, then the Fernet ring, newest first

    @classmethod
    def of(cls, timber: Any) -> SubjectHasher:
        secret = getattr(timber.settings, "gdpr_subject_key", None)
        return cls(timber.keyring, subject_keys(secret.get_secret_value()) if secret is not None else ())

    def hash(self, value: Any) -> str:
        """The hash written now (the writing key)."""
        return self._digest(self._keys[0], value)

    def hashes(self, value: Any) -> list[str]:
        """The hashes under every configured key: ledger entries written before a rotation still match."""
        return [self._digest(k, value) for k in self._keys]

    @property
    def key_id(self) -> str:
        """The id of the writing key (a hash of it: it tells keys apart, it reveals nothing of them)."""
        return _key_id(self._keys[0])

    @property
    def key_ids(self) -> set[str]:
        return {_key_id(k) for k in self._keys}

    def older_fernet_ids(self) -> list[tuple[str, str]]:
        """(label, id) of the Fernet-derived keys after the newest: the ones a rotation would drop."""
        return self.labelled_ids()[self._first_fernet + 1:]

    def labelled_ids(self) -> list[tuple[str, str]]:
        """(where the key comes from, its id), the writing key first: how an operator maps ids to keys."""
        return [(label, _key_id(k)) for label, k in self._labelled]

    @staticmethod
    def _digest(key: bytes, value: Any) -> str:
        return hmac.new(key, str(value).encode("utf-8"), hashlib.sha256).hexdigest()


def subject_keys(value: str) -> tuple[str, ...]:
    """TIMBER_GDPR_SUBJECT_KEY: comma-separated, the one that writes first (a changed key keeps the old second)."""
    return tuple(k for k in (part.strip() for part in value.split(",")) if k)


def _derive(secret: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=SUBJECT_HASH_PURPOSE).derive(secret)


def _key_id(key: bytes) -> str:
    return hashlib.sha256(b"timber-gdpr-key-id" + key).hexdigest()[:12]


@dataclass(frozen=True)
class Subject:
    """One data subject: the id as the apps store it in each model's user_id_field, and its keyed hash.

    `id_keys`: the registry's user_id_field names that are not primary keys (user_id, owner_id...):
    under those a payload's number or text names the subject; elsewhere only text equal to the id does,
    so a numeric id never matches every quantity of 1.
    """

    user_id: str
    hash: str
    id_keys: frozenset[str] = frozenset({"user_id"})

    @classmethod
    def of(cls, timber: Any, user_id: Any) -> Subject:
        text = str(user_id)  # exactly as stored: " u2" and "u2" are two people
        if not text.strip():
            raise GdprError("the user id is empty: give the id the apps store in each model's user_id_field")
        keys = set()
        for model in timber.registry.with_feature("gdpr"):
            field = model.timber_spec.spec.gdpr.user_id_field
            if not model.__table__.c[field].primary_key:
                keys.add(field)
        return cls(text, SubjectHasher.of(timber).hash(text), frozenset(keys or {"user_id"}))

    def anonymized_text(self) -> str:
        """What anonymized text fields hold: the mark and a short keyed hash, the same for every row."""
        return f"{ERASED_MARK}{self.hash[:16]}"

    def held_in(self, value: Any) -> bool:
        """Whether JSON-like data (job arguments, results) carries the subject's id anywhere."""
        stack: list[tuple[str | None, Any]] = [(None, value)]
        while stack:
            key, item = stack.pop()
            if isinstance(item, dict):
                stack.extend((str(k), v) for k, v in item.items())
            elif isinstance(item, list | tuple):
                stack.extend((key, v) for v in item)
            elif isinstance(item, str):
                if item == self.user_id:
                    return True
            elif key in self.id_keys and item is not None and not isinstance(item, bool) \
                    and str(item) == self.user_id:
                return True
        return False

    def named_in(self, text: str | None) -> bool:
        """Whether free text (an error message, a caller's idempotency key) names the subject's id as a word."""
        if not text:
            return False
        # An id is a whole word only between characters ids are not made of: "u1" is not in
        # "u1-2", "order-u1.csv" or "u1_b" (those may name other people).
        return re.search(rf"(?<![{ID_CHARS}]){re.escape(self.user_id)}(?![{ID_CHARS}])", str(text)) is not None
