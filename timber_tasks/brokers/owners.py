"""Who holds a claimed message: one owner folder per process, alive while its lock is held.

A consumer claims a message by renaming it into `processing/<owner>/<queue>/`. The owner is
host + pid + a random token, and holds a POSIX record lock on `processing/<owner>.lock` for
its whole life. The kernel drops that lock when the process dies, even by SIGKILL, and a
forked child does not inherit it; so a lock another process can take means a dead owner,
whose claims go back to their queues.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import logging
import os
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

LOCK_SUFFIX = ".lock"


@dataclass
class Owner:
    """This process's claim folder, and the open file whose lock says it is alive."""

    name: str
    folder: Path
    lock_file: int


# One owner per process and broker root; a forked child starts with none (see _forget_after_fork).
_owners: dict[Path, Owner] = {}


def _forget_after_fork() -> None:
    for owner in _owners.values():
        with contextlib.suppress(OSError):
            os.close(owner.lock_file)  # the child holds no lock on it: POSIX locks are per process
    _owners.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


def own_owner(processing: Path) -> Owner:
    """This process's owner under `processing`, made and locked on first use."""
    owner = _owners.get(processing)
    if owner is None:
        owner = _owners[processing] = _become_owner(processing)
    return owner


def _become_owner(processing: Path) -> Owner:
    name = f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    processing.mkdir(parents=True, exist_ok=True)
    # Locked under a temporary name, then renamed into place: no one ever sees it unlocked.
    temporary = processing / f".{name}.tmp"
    fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.rename(temporary, processing / f"{name}{LOCK_SUFFIX}")
    folder = processing / name
    folder.mkdir()
    atexit.register(_leave, processing, name)
    return Owner(name, folder, fd)


def _leave(processing: Path, name: str) -> None:
    """At a clean exit, remove this owner's folder and lock if it holds no claim (else a restore will)."""
    owner = _owners.get(processing)
    if owner is None or owner.name != name:  # a forked child's copy of the registration
        return
    if _restore_folder(owner.folder, None) == 0:
        with contextlib.suppress(OSError):
            owner.folder.rmdir()
            (processing / f"{name}{LOCK_SUFFIX}").unlink()


def is_alive(processing: Path, name: str) -> bool:
    """Whether owner `name` under `processing` is a live process (this one included)."""
    mine = _owners.get(processing)
    return (mine is not None and mine.name == name) or not is_dead(processing / f"{name}{LOCK_SUFFIX}")


def is_dead(lock_path: Path) -> bool:
    """True when no live process holds the lock (the test takes it for a moment, then lets go)."""
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    finally:
        os.close(fd)  # also releases the lock taken, if any
    return True


def restore_dead_claims(processing: Path, queues: Path) -> int:
    """Move every message claimed by a dead owner back to its queue; returns how many."""
    if not processing.is_dir():
        return 0
    mine = {owner.name for root, owner in _owners.items() if root == processing}
    restored = 0
    for entry in os.listdir(processing):
        if entry.startswith(".") or entry.endswith(LOCK_SUFFIX) or entry in mine:
            continue
        if not is_dead(processing / f"{entry}{LOCK_SUFFIX}"):
            continue
        restored += _restore_folder(processing / entry, queues)
        with contextlib.suppress(OSError):
            (processing / entry).rmdir()
        with contextlib.suppress(FileNotFoundError):
            (processing / f"{entry}{LOCK_SUFFIX}").unlink()
    if restored:
        logger.warning("embedded broker: %d message(s) claimed by a dead consumer are back in their queues",
                       restored)
    return restored


def _restore_folder(folder: Path, queues: Path | None) -> int:
    """Move a folder's claims back to `queues` (None: only count them, removing empty queue folders)."""
    restored = 0
    for queue in _listdir(folder):
        for name in _listdir(folder / queue):
            if queues is None:
                restored += 1
                continue
            (queues / queue).mkdir(parents=True, exist_ok=True)
            try:
                os.rename(folder / queue / name, queues / queue / name)
            except FileNotFoundError:  # another worker restored it first
                continue
            restored += 1
        with contextlib.suppress(OSError):
            (folder / queue).rmdir()
    return restored


def _listdir(folder: Path) -> list[str]:
    try:
        return os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
