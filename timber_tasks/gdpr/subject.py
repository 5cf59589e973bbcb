"""The data subject, and the keyed hash that is all the platform keeps of a subject once erased."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from timber_tasks.errors import ConfigError, TimberError

# HKDF purpose of the subject-hash key: derived from each Fernet key, so there is no second secret.
SUBJECT_HASH_PURPOSE = b"timber-gdpr-subject"
ERASED_MARK = "erased-"  # anonymized text starts with this, so verify can tell it from personal data


class GdprError(TimberError):
    """Raised when a GDPR export or erasure cannot run as asked (the message says what to change)."""


class OutputExistsError(GdprError, FileExistsError):
    """Raised when an export would overwrite a file (pass --force / force=True to replace it)."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"{path} exists: choose another --out or pass --force to replace it")


class SubjectHasher:
    """HMAC-SHA256 of subject ids under keys derived from the encryption key ring (newest first)."""

    def __init__(self, keyring: Any) -> None:
        if keyring is None:
            raise ConfigError("GDPR records keep subjects only as keyed hashes, under a key derived from "
                              "TIMBER_ENCRYPTION_KEYS: set it (`timber-tasks keys generate` makes one)")
        self._keys = keyring.derived_keys(SUBJECT_HASH_PURPOSE)

    def hash(self, value: Any) -> str:
        """The hash written now (newest key)."""
        return self._digest(self._keys[0], value)

    def hashes(self, value: Any) -> list[str]:
        """The hashes under every configured key: ledger entries written before a rotation still match."""
        return [self._digest(k, value) for k in self._keys]

    @staticmethod
    def _digest(key: bytes, value: Any) -> str:
        return hmac.new(key, str(value).encode("utf-8"), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Subject:
    """One data subject: the id as the apps store it in each model's user_id_field, and its keyed hash."""

    user_id: str
    hash: str

    @classmethod
    def of(cls, timber: Any, user_id: Any) -> Subject:
        text = str(user_id).strip()
        if not text:
            raise GdprError("the user id is empty: give the id the apps store in each model's user_id_field")
        return cls(text, SubjectHasher(timber.keyring).hash(text))

    def anonymized_text(self) -> str:
        """What anonymized text fields hold: the mark and a short keyed hash, the same for every row."""
        return f"{ERASED_MARK}{self.hash[:16]}"


def holds_subject(value: Any, user_id: str) -> bool:
    """Whether JSON-like data carries the subject's id anywhere (a value equal to it, at any depth)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
        elif item is not None and not isinstance(item, bool) and str(item) == user_id:
            return True
    return False


def mentions_subject(text: str | None, user_id: str) -> bool:
    """Whether free text (an error message, a caller's key) names the subject's id."""
    return bool(text) and user_id in str(text)
