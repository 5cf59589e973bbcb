"""The embedded broker: a kombu transport over a folder, written the maildir way.

    <root>/tmp/                       a message being written (fsynced, then renamed away)
    <root>/queues/<queue>/<name>.msg  ready messages, oldest name first
    <root>/processing/<owner>/<queue>/ messages a live consumer claimed and has not acked
    <root>/control/<exchange>.json    exchange tables (replaced whole, under a lock)
    <root>/corrupt/                   files that were not a message, kept for a look
    <root>/queues/<queue>/.meta.json  a queue's `expires` / `message_ttl` (seconds), when declared with them
    <root>/queues/<queue>/.consumer.<owner>  a consumer of the queue (alive while its owner is)

A message appears whole or not at all (rename), exactly one consumer gets it (rename into
its own folder), an ack deletes the claimed file, a requeue or a warm shutdown renames it
back, and the claims of a dead consumer go back to their queues when any consumer of the
broker notices (at start and every `restore_interval` seconds). The same sweep honours
`message_ttl` (older messages are dropped) and `expires` (a queue no live consumer has used
for that long is deleted with its bindings), as RabbitMQ does: a killed Flower's event queue
would otherwise receive every event forever. kombu's own filesystem transport does none of
this and crashes its worker on a half-written file (kombu #1551).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import stat
import time
import uuid
from collections import deque
from pathlib import Path
from queue import Empty
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import virtual

from timber_tasks.brokers import owners

logger = logging.getLogger(__name__)

SUFFIX = ".msg"
META, CONSUMER = ".meta.json", ".consumer."
DEFAULT_RESTORE_INTERVAL = 5.0  # seconds between scans for a dead consumer's claims


def _listdir(folder: Path) -> list[str]:
    try:
        return os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _limits(folder: Path) -> dict[str, float]:
    """A queue's `message_ttl` / `expires` from its meta file; a file that is not such a table is named, not obeyed."""
    try:
        raw = json.loads((folder / META).read_bytes())
    except (FileNotFoundError, NotADirectoryError):
        return {}
    except (ValueError, RecursionError, OSError) as exc:
        raw = exc
    if not isinstance(raw, dict) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in raw.values()):
        logger.error("embedded broker: %s is not a table of queue limits in seconds; ignored", folder / META)
        return {}
    return {k: float(v) for k, v in raw.items() if k in ("message_ttl", "expires")}


def _valid_name(name: str) -> bool:
    return bool(name) and "/" not in name and "\0" not in name and not name.startswith(".")


def _read_regular_file(path: Path) -> bytes:
    """A file's bytes; a link, pipe or device named like a message is refused, never opened or followed."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO would block
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise TypeError("it is not a regular file")
        return file.read()


def _check_shape(payload: Any) -> None:
    """What kombu and Celery take from a message without checking it: anything else would stop the worker."""
    if not isinstance(payload, dict):
        raise TypeError("it is not a JSON object")
    for part in ("headers", "properties"):
        if not isinstance(payload.get(part, {}), dict):
            raise TypeError(f"its {part} are not an object")
    if not isinstance(payload["properties"]["delivery_tag"], str):
        raise TypeError("its delivery tag is not a string")
    if not isinstance(payload.get("body"), str):
        raise TypeError("its body is not a string")
    for name, value in [(f"{key} header", payload.get("headers", {}).get(key)) for key in ("task", "id")] + [
            (key, payload.get(key)) for key in ("content-type", "content-encoding")]:
        if value is not None and not isinstance(value, str):  # kombu itself writes None for some
            raise TypeError(f"its {name} is not a string")


def _short_name(name: str, suffix: str, limit: int = 240) -> str:
    """name + suffix within a file name's length limit (255 bytes): a long name is cut, with its hash kept."""
    if len((name + suffix).encode()) <= limit:
        return name + suffix
    digest = hashlib.sha256(name.encode(errors="surrogateescape")).hexdigest()[:16]
    return name.encode()[:120].decode(errors="ignore") + f"~{digest}" + suffix


class Channel(virtual.Channel):
    """One channel on the folder broker; claims are tracked per delivery tag."""

    supports_fanout = True

    def __init__(self, connection: Any, **kwargs: Any) -> None:
        options = connection.client.transport_options
        root = Path(options.get("data_folder") or "broker").resolve()
        self.tmp_folder, self.queues_folder = root / "tmp", root / "queues"
        self.processing_folder, self.control_folder = root / "processing", root / "control"
        self.corrupt_folder = root / "corrupt"
        for folder in (self.tmp_folder, self.queues_folder, self.processing_folder, self.control_folder):
            folder.mkdir(parents=True, exist_ok=True)
        self.fsync = bool(options.get("fsync", True))
        self.restore_interval = float(options.get("restore_interval", DEFAULT_RESTORE_INTERVAL))
        self._claims: dict[str, deque[tuple[str, Path]]] = {}  # delivery tag -> (queue, claimed file)
        self._listings: dict[str, deque[str]] = {}  # queue -> names seen ready, oldest first
        self._no_ack_queues: set[str] = set()
        self._tables: dict[str, tuple[tuple[int, int, int], list[Any]]] = {}
        self._next_restore = 0.0
        super().__init__(connection, **kwargs)

    # -- messages ---------------------------------------------------------------------------

    def _queue_folder(self, queue: str) -> Path:
        if not _valid_name(queue):
            raise ChannelError(f"embedded broker: invalid queue name {queue!r}")
        return self.queues_folder / queue

    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        """Write and fsync under a temporary name, then rename into the queue: whole or absent."""
        folder = self._queue_folder(queue)
        name = f"{time.time_ns():020d}.{uuid.uuid4().hex}{SUFFIX}"
        temporary = self.tmp_folder / name
        data = json.dumps(message).encode()
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, data)
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.rename(temporary, folder / name)
        except FileNotFoundError:  # first message of a queue no one declared yet
            folder.mkdir(parents=True, exist_ok=True)
            os.rename(temporary, folder / name)

    def _get(self, queue: str, timeout: float | None = None) -> Any:
        """Claim the oldest ready message of `queue` by renaming it into this process's folder."""
        self._maybe_restore_dead_claims()
        folder = self._queue_folder(queue)
        listing = self._listings.get(queue)
        if not listing:
            try:
                listing = self._listings[queue] = deque(sorted(os.listdir(folder)))
            except FileNotFoundError:
                raise Empty() from None
        owner = owners.own_owner(self.processing_folder)
        while listing:
            name = listing.popleft()
            if not name.endswith(SUFFIX):
                continue
            claimed = owner.folder / queue / name
            try:
                os.rename(folder / name, claimed)
            except FileNotFoundError:
                if not claimed.parent.is_dir():  # this owner's first claim on this queue
                    claimed.parent.mkdir(parents=True, exist_ok=True)
                    listing.appendleft(name)
                continue  # another consumer took it
            payload = self._read(claimed, queue)
            if payload is None:
                continue
            if queue in self._no_ack_queues:
                claimed.unlink()  # no ack will come: the consumer asked for none
            else:
                tag = payload["properties"]["delivery_tag"]
                self._claims.setdefault(tag, deque()).append((queue, claimed))
            return payload
        raise Empty()

    def _read(self, claimed: Path, queue: str) -> Any:
        """The message in a claimed file, or None after moving a bad file to corrupt/."""
        try:
            payload = json.loads(_read_regular_file(claimed))
            _check_shape(payload)
            return payload
        # Anything else here is a file no producer of ours wrote: nested past Python's limit, a folder,
        # pipe or link named like a message, a message of the wrong shape. None of it may stop the consumer.
        except (ValueError, KeyError, TypeError, RecursionError, OSError) as exc:
            self.corrupt_folder.mkdir(exist_ok=True)
            target = self.corrupt_folder / _short_name(f"{queue}.{claimed.name}", f".{time.time_ns()}")
            os.replace(claimed, target)
            logger.error("embedded broker: %s in queue %r is not a message (%s); moved to %s",
                         claimed.name, queue, type(exc).__name__ if isinstance(exc, RecursionError) else
                         (exc or "empty file"), target)
            return None

    def _release(self, delivery_tag: str, back_to_queue: bool = False) -> bool:
        """Forget a claim: delete the claimed file (ack), or rename it back to its queue."""
        claims = self._claims.get(delivery_tag)
        if not claims:
            return False
        queue, claimed = claims.popleft()
        if not claims:
            del self._claims[delivery_tag]
        with contextlib.suppress(FileNotFoundError):
            if back_to_queue:
                os.rename(claimed, self._queue_folder(queue) / claimed.name)
                self._listings.pop(queue, None)  # it is older than what the listing holds
            else:
                claimed.unlink()
        return True

    def basic_ack(self, delivery_tag: str, multiple: bool = False) -> None:
        super().basic_ack(delivery_tag, multiple)
        self._release(delivery_tag)

    def basic_reject(self, delivery_tag: str, requeue: bool = False) -> None:
        super().basic_reject(delivery_tag, requeue=requeue)  # a requeue went through _restore
        self._release(delivery_tag)

    def _restore(self, message: Any) -> None:
        """Requeue and warm shutdown: the claimed file goes back where it was."""
        if not self._release(message.delivery_tag, back_to_queue=True):
            super()._restore(message)

    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        if no_ack:
            self._no_ack_queues.add(queue)
        marker = self._queue_folder(queue) / f"{CONSUMER}{owners.own_owner(self.processing_folder).name}"
        with contextlib.suppress(FileNotFoundError):
            marker.touch()
        return super().basic_consume(queue, no_ack, *args, **kwargs)

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> Any:
        message = super().basic_get(queue, no_ack=no_ack, **kwargs)
        if message is not None and no_ack:
            self._release(message.delivery_tag)
        return message

    def _maybe_restore_dead_claims(self) -> None:
        now = time.monotonic()
        if now >= self._next_restore:
            self._next_restore = now + self.restore_interval
            owners.restore_dead_claims(self.processing_folder, self.queues_folder)
            self.expire_queues()

    def expire_queues(self) -> None:
        """Drop messages older than their queue's `message_ttl`; delete queues `expires` says are gone."""
        for queue in _listdir(self.queues_folder):
            folder = self.queues_folder / queue
            limits = _limits(folder)
            if not limits:
                continue
            now_ns = time.time_ns()
            names = _listdir(folder)
            ttl = limits.get("message_ttl")
            if ttl is not None:
                for name in names:
                    if name.endswith(SUFFIX) and name[:20].isdigit() and now_ns - int(name[:20]) > ttl * 1e9:
                        with contextlib.suppress(FileNotFoundError):
                            (folder / name).unlink()
            expires = limits.get("expires")
            if expires is not None and self._unused_for(folder, names) > expires:
                self._remove_queue(queue)
                self._drop_bindings(queue)
                logger.info("embedded broker: queue %r had no live consumer for %gs (expires) and was deleted",
                            queue, expires)

    def _unused_for(self, folder: Path, names: list[str]) -> float:
        """Seconds since a live consumer last held the queue; 0 while one does."""
        last = 0.0
        for name in [n for n in names if n.startswith(CONSUMER)] + [META]:
            marker = folder / name
            owner = name[len(CONSUMER):]
            if name != META and owners.is_alive(self.processing_folder, owner):
                return 0.0
            with contextlib.suppress(FileNotFoundError):
                last = max(last, marker.stat().st_mtime)
        return time.time() - last if last else 0.0

    def _drop_bindings(self, queue: str) -> None:
        for table in _listdir(self.control_folder):
            if table.endswith(".json"):
                name = table[: -len(".json")]
                self._update_table("" if name == "(default)" else name,
                                   lambda rows: [row for row in rows if row[2] != queue])

    def _size(self, queue: str) -> int:
        try:
            return sum(1 for name in os.listdir(self._queue_folder(queue)) if name.endswith(SUFFIX))
        except FileNotFoundError:
            return 0

    def _purge(self, queue: str) -> int:
        count = 0
        folder = self._queue_folder(queue)
        self._listings.pop(queue, None)
        for name in os.listdir(folder) if folder.is_dir() else []:
            if not name.endswith(SUFFIX):
                continue  # the queue's own files (limits, consumers) stay
            with contextlib.suppress(FileNotFoundError):
                (folder / name).unlink()
                count += 1
        return count

    def prepare_queue_arguments(self, arguments: Any, **kwargs: Any) -> Any:
        """Keep `expires` and `message_ttl` (seconds): this broker honours them in its sweep."""
        kept = dict(arguments or {})
        kept.update({k: float(kwargs[k]) for k in ("expires", "message_ttl") if kwargs.get(k) is not None})
        return kept

    def _remove_queue(self, queue: str) -> None:
        """The queue's folder and everything in it (messages, limits, consumer markers)."""
        self._listings.pop(queue, None)
        folder = self._queue_folder(queue)
        for name in _listdir(folder):
            with contextlib.suppress(FileNotFoundError):
                (folder / name).unlink()
        with contextlib.suppress(OSError):
            folder.rmdir()

    def _new_queue(self, queue: str, **kwargs: Any) -> None:
        folder = self._queue_folder(queue)
        folder.mkdir(exist_ok=True)
        limits = {k: v for k, v in (kwargs.get("arguments") or {}).items() if k in ("expires", "message_ttl")}
        if limits:
            temporary = self.tmp_folder / f"{queue}{META}.{uuid.uuid4().hex}"
            temporary.write_text(json.dumps(limits))
            os.replace(temporary, folder / META)

    def _has_queue(self, queue: str, **kwargs: Any) -> bool:
        return self._queue_folder(queue).is_dir()

    def _delete(self, queue: str, exchange: str, routing_key: str, pattern: str, *args: Any,
                **kwargs: Any) -> None:
        self._remove_queue(queue)
        binding = [routing_key or "", pattern or "", queue or ""]
        self._update_table(exchange, lambda table: [row for row in table if row != binding])

    # -- exchange tables --------------------------------------------------------------------

    def _table_file(self, exchange: str) -> Path:
        name = exchange or "(default)"
        if not _valid_name(name):
            raise ChannelError(f"embedded broker: invalid exchange name {exchange!r}")
        return self.control_folder / f"{name}.json"

    def get_table(self, exchange: str) -> list[Any]:
        """The bindings of an exchange, read without a lock: a table is only ever replaced whole."""
        file = self._table_file(exchange)
        try:
            stat = file.stat()
        except FileNotFoundError:
            return []
        version = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        cached = self._tables.get(exchange)
        if cached and cached[0] == version:
            return cached[1]
        table = [tuple(row) for row in self._load_table(file)]
        self._tables[exchange] = (version, table)
        return table

    def _load_table(self, file: Path) -> list[Any]:
        try:
            table = json.loads(file.read_bytes())
            if isinstance(table, list) and all(isinstance(row, list) and len(row) == 3 for row in table):
                return table
            problem = "not a list of bindings"
        except FileNotFoundError:
            return []
        except ValueError as exc:
            problem = str(exc) or "empty file"
        self.corrupt_folder.mkdir(exist_ok=True)
        target = self.corrupt_folder / f"{file.name}.{time.time_ns()}"
        with contextlib.suppress(FileNotFoundError):
            os.replace(file, target)
            logger.error("embedded broker: exchange table %s is not valid (%s); moved to %s, bindings are "
                         "declared again as consumers start", file, problem, target)
        return []

    def _update_table(self, exchange: str, change: Any) -> None:
        """Read, change and replace a table under its lock; the new one is renamed over the old."""
        file = self._table_file(exchange)
        with open(file.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            table = self._load_table(file)
            new = change(table)
            if new == table:
                return
            temporary = self.tmp_folder / f"{file.name}.{uuid.uuid4().hex}"
            temporary.write_text(json.dumps(new))
            os.replace(temporary, file)

    def queue_bind(self, queue: str, exchange: str | None = None, routing_key: str = "",
                   arguments: Any = None, **kwargs: Any) -> None:
        """Bind; a binding this process made before is written again if its table lost it (set aside)."""
        known = self.state.has_binding(queue, exchange or "amq.direct", routing_key)
        super().queue_bind(queue, exchange, routing_key, arguments, **kwargs)
        if known:
            exchange = exchange or "amq.direct"
            self._queue_bind(exchange, *self.typeof(exchange).prepare_bind(queue, exchange, routing_key, arguments))

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str, queue: str) -> None:
        binding = [routing_key or "", pattern or "", queue or ""]
        self._update_table(exchange, lambda table: table if binding in table else [binding, *table])

    def _put_fanout(self, exchange: str, message: Any, routing_key: str, **kwargs: Any) -> None:
        for _, _, queue in self.get_table(exchange):
            self._put(queue, message, **kwargs)


class Transport(virtual.Transport):
    """kombu transport for `maildir://` (see the module docstring)."""

    Channel = Channel
    states: dict[str, virtual.BrokerState] = {}  # per folder: declared exchanges, shared in a process
    driver_type = "maildir"
    driver_name = "maildir"
    polling_interval = 0.05
    implements = virtual.Transport.implements.extend(
        asynchronous=False, exchange_type=frozenset(["direct", "topic", "fanout"]))

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        root = str(Path(client.transport_options.get("data_folder") or "broker").resolve())
        self.state = self.states.setdefault(root, virtual.BrokerState())

    def driver_version(self) -> str:
        return "1"
