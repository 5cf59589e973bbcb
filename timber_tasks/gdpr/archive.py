"""Encrypting an export for delivery: a streamed AES-256-GCM format, readable with `timber-tasks gdpr decrypt`.

Layout: MAGIC, a key-source byte (1: scrypt from a passphrase, 2: a raw 32-byte key), a
16-byte salt (zeros for a raw key), then chunks of [4-byte big-endian length][12-byte
nonce][ciphertext + 16-byte tag]. Each chunk's associated data is its index and whether it
is the last, so chunks cannot be reordered, dropped or the file cut short unnoticed.
Memory stays at one chunk however large the archive.
"""

from __future__ import annotations

import base64
import os
import struct
import tempfile
from pathlib import Path
from typing import IO, Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from timber_tasks.gdpr.subject import GdprError

MAGIC = b"TIMBER-GDPR-1\n"
CHUNK = 1 << 20
FROM_PASSPHRASE, FROM_KEY = 1, 2
SCRYPT_N = 1 << 15  # about 0.1 s and 32 MiB: cheap for the operator, costly for a guesser


class ArchiveKey:
    """A passphrase or a 32-byte key (urlsafe base64, e.g. from `timber-tasks gdpr keygen`)."""

    def __init__(self, *, passphrase: str | None = None, key: str | None = None) -> None:
        if (passphrase is None) == (key is None):
            raise GdprError("give the archive either a passphrase or a key, not both or neither")
        self.passphrase = passphrase
        self.raw: bytes | None = None
        if key is not None:
            try:
                self.raw = base64.urlsafe_b64decode(key.strip().encode())
            except ValueError:
                self.raw = b""
            if len(self.raw) != 32:
                raise GdprError("the archive key must be 32 bytes in urlsafe base64 (`timber-tasks gdpr keygen`)")

    def derive(self, salt: bytes) -> bytes:
        if self.raw is not None:
            return self.raw
        assert self.passphrase is not None
        return Scrypt(salt=salt, length=32, n=SCRYPT_N, r=8, p=1).derive(self.passphrase.encode("utf-8"))

    @property
    def raw_text(self) -> str | None:
        return base64.urlsafe_b64encode(self.raw).decode() if self.raw is not None else None

    @property
    def source(self) -> int:
        return FROM_KEY if self.raw is not None else FROM_PASSPHRASE


def new_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def _aad(index: int, last: bool) -> bytes:
    return struct.pack(">Q?", index, last)


class EncryptingWriter:
    """A write-only stream (what zipfile needs: write, tell, flush) that encrypts into `out` chunk by chunk."""

    def __init__(self, out: IO[bytes], key: ArchiveKey) -> None:
        salt = os.urandom(16) if key.source == FROM_PASSPHRASE else bytes(16)
        self._aes = AESGCM(key.derive(salt))
        self._out = out
        self._buffer = bytearray()
        self._index = 0
        self._position = 0
        out.write(MAGIC + bytes([key.source]) + salt)

    def write(self, data: Any) -> int:
        self._buffer += data
        self._position += len(data)
        while len(self._buffer) > CHUNK:  # keep one chunk back: the last one is marked as last
            self._emit(bytes(self._buffer[:CHUNK]), last=False)
            del self._buffer[:CHUNK]
        return len(data)

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        self._out.flush()

    def close(self) -> None:
        self._emit(bytes(self._buffer), last=True)
        self._buffer.clear()
        self._out.flush()

    def _emit(self, plain: bytes, *, last: bool) -> None:
        nonce = os.urandom(12)
        sealed = self._aes.encrypt(nonce, plain, _aad(self._index, last))
        self._out.write(struct.pack(">I", len(sealed)) + nonce + sealed)
        self._index += 1


def decrypt_archive(source: Path, target: Path, key: ArchiveKey) -> None:
    """Write the ZIP inside an encrypted export; a wrong key or a damaged file is a GdprError, not garbage.

    The ZIP appears whole or not at all, readable by its owner only (it holds a person's data).
    """
    fd, partial = partial_file(target)
    try:
        with source.open("rb") as src, os.fdopen(fd, "wb") as out:
            _decrypt_into(src, out, source, key)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def partial_file(target: Path) -> tuple[int, Path]:
    """A 0600 file beside `target` to write into, renamed over it when whole. Only a regular file is
    ever replaced: --force on a device, a folder or a FIFO would turn it into this file."""
    if target.exists() and not target.is_file():
        raise GdprError(f"{target} is not a regular file: give --out a file path")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    except OSError as exc:
        raise GdprError(f"cannot write {target}: {exc.strerror or exc}") from None
    return fd, Path(name)


def _decrypt_into(src: Any, out: Any, source: Path, key: ArchiveKey) -> None:
    from cryptography.exceptions import InvalidTag

    head = src.read(len(MAGIC) + 17)
    if not head.startswith(MAGIC) or len(head) < len(MAGIC) + 1 or head[len(MAGIC)] not in (FROM_PASSPHRASE, FROM_KEY):
        raise GdprError(f"{source} is not an encrypted timber-tasks export")
    if len(head) < len(MAGIC) + 17:
        raise GdprError(f"{source} is cut short: its header is incomplete")
    if head[len(MAGIC)] != key.source:
        wanted = "a passphrase" if head[len(MAGIC)] == FROM_PASSPHRASE else "a key"
        raise GdprError(f"{source} was encrypted with {wanted}: give that")
    aes = AESGCM(key.derive(head[len(MAGIC) + 1:]))
    index = 0
    while True:
        size_bytes = src.read(4)
        if len(size_bytes) < 4:
            raise GdprError(f"{source} is cut short: its last part is missing")
        (size,) = struct.unpack(">I", size_bytes)
        nonce, sealed = src.read(12), src.read(size)
        last = not src.peek(1) if hasattr(src, "peek") else False
        try:
            out.write(aes.decrypt(nonce, sealed, _aad(index, last)))
        except InvalidTag:
            raise GdprError(f"{source}: wrong passphrase or key, or the file was changed") from None
        if last:
            return
        index += 1
