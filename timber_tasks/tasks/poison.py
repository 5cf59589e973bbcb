"""Malformed messages never stop a worker: each is rejected, logged and kept as a dead letter.

Two holes in the stock path: kombu's virtual transports (Redis, the embedded broker) decode
`body_encoding` while taking the message off the queue, and an unknown encoding raised
AttributeError in the worker's main process ("Unrecoverable error": the worker stopped and
the message was lost). And Celery's consumer drops a message it cannot decode, or whose task
it does not know, after a log line only. Here an unknown encoding leaves the body as it
came, so it fails to decode where Celery expects it, and the consumer writes every message it
refuses to the dead-letter table (`timber-tasks dlq list`), body and headers included.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.utils import uuid
from celery.worker.consumer import Consumer
from kombu.transport.virtual import base as virtual

log = logging.getLogger("timber_tasks.poison")

KEEP_CHARS = 20_000  # enough of a body to see what it was; a huge one is not copied whole


def _decode_body(self: virtual.Channel, body: Any, encoding: str | None = None) -> Any:
    if encoding and encoding.lower() != "utf-8":
        codec = self.codecs.get(encoding)
        if codec is None:  # left as is: the serializer refuses it, and the consumer keeps it
            log.error("message with unknown body_encoding %r: refused", encoding[:40])
            return body
        return codec.decode(body)
    return body


def install_transport_guard() -> None:
    virtual.Channel.decode_body = _decode_body  # type: ignore[method-assign]
    _guard_redis_restore()


def _guard_redis_restore() -> None:
    """A worker that loses Redis must not die closing its channel.

    On a lost connection Celery closes the channel, and kombu's Redis QoS then tries to put the
    worker's unacked jobs back through a connection that is already gone: AttributeError
    ('NoneType' has no 'hostname'), "Unrecoverable error", and the worker exits. Those jobs
    stay in Redis's unacked set, where the outbox relay finds them (tasks/lost_jobs.py).
    """
    from kombu.transport import redis as kombu_redis
    from redis.exceptions import ConnectionError as RedisConnectionError

    if getattr(kombu_redis.QoS, "_timber_guarded", False):
        return
    restore = kombu_redis.QoS.restore_unacked

    def restore_unacked(self: Any, client: Any = None) -> None:
        try:
            restore(self, client)
        except (AttributeError, RedisConnectionError) as exc:
            log.warning("Redis gone while closing the channel: %d unacked job(s) left for the outbox relay (%s)",
                        len(getattr(self, "_delivered", {}) or {}), exc)

    kombu_redis.QoS.restore_unacked = restore_unacked  # type: ignore[method-assign]
    # The same after a Redis restart: a job that finished on the old channel is acked through its gone
    # connection (AttributeError in kombu's _connparams). Its effect has committed under its idempotency
    # key; it stays in the unacked set, and a redelivery of it is a no-op.
    for name in ("ack", "reject"):
        setattr(kombu_redis.QoS, name, _survive_lost_redis(getattr(kombu_redis.QoS, name), name,
                                                           (AttributeError, RedisConnectionError)))
    kombu_redis.QoS._timber_guarded = True  # type: ignore[attr-defined]


def _survive_lost_redis(original: Any, name: str, errors: tuple[type[BaseException], ...]) -> Any:
    def guarded(self: Any, delivery_tag: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return original(self, delivery_tag, *args, **kwargs)
        except errors as exc:
            log.warning("Redis gone: could not %s job %s on its old channel; it stays unacked, a redelivery "
                        "is a no-op (%s)", name, delivery_tag, exc)
            return None

    return guarded


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    return str(value)[:KEEP_CHARS]


def keep(message: Any, reason: str, error: BaseException | None) -> None:
    """Write the refused message to the dead-letter table; never raise (the worker must go on)."""
    try:
        from timber_tasks import runtime
        from timber_tasks.jobs import dead_letters

        headers = dict(getattr(message, "headers", None) or {})
        safe_headers = {str(k)[:100]: _text(v)[:500] for k, v in headers.items()}
        properties = {str(k)[:100]: _text(v)[:500] for k, v in (getattr(message, "properties", None) or {}).items()}
        task_id = _text(headers.get("id") or uuid())[:64]
        letter = dead_letters.record(
            runtime.for_this_process().db, task_id=task_id, task_name=_text(headers.get("task") or "<malformed>")[:200],
            args=[_text(getattr(message, "body", ""))], kwargs={"headers": safe_headers, "properties": properties},
            error=error or ValueError(reason), traceback=None, attempts=1)
        log.error("refused a malformed message (%s): dead letter %d", reason, letter)
    except Exception:
        log.exception("refused a malformed message (%s); it could not be kept as a dead letter", reason)


def _body_problem(message: Any) -> str | None:
    """What is wrong with a task message's decoded body (protocol 2: [args, kwargs, embed]), or None."""
    headers = getattr(message, "headers", None) or {}
    if "task" not in headers or "args" in headers:  # not a task message, or protocol 1: Celery judges
        return None
    try:
        body = message.decode()
    except Exception:
        return None  # Celery's own path: on_decode_error
    if not (isinstance(body, list | tuple) and len(body) == 3 and isinstance(body[0], list | tuple)
            and isinstance(body[1], dict) and isinstance(body[2], dict | type(None))):
        return "a task body must be [args, kwargs, embed]"
    return None


class PoisonAwareConsumer(Consumer):
    """Celery's consumer, keeping every message it refuses where an operator can see it."""

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Any:
        handler = super().create_task_handler(*args, **kwargs)

        def on_task_received(message: Any) -> Any:
            # A body of the wrong shape fails in the pool "outside the task": no failure, no letter.
            problem = _body_problem(message)
            if problem is None:
                return handler(message)
            keep(message, problem, None)
            message.ack()
            return None

        return on_task_received

    def on_decode_error(self, message: Any, exc: BaseException) -> None:
        keep(message, "cannot decode the body", exc)
        super().on_decode_error(message, exc)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        keep(message, "not a task message", None)
        super().on_unknown_message(body, message)

    def on_unknown_task(self, body: Any, message: Any, exc: BaseException) -> None:
        keep(message, "unknown task", exc)
        super().on_unknown_task(body, message, exc)

    def on_invalid_task(self, body: Any, message: Any, exc: BaseException) -> None:
        keep(message, "invalid task message", exc)
        super().on_invalid_task(body, message, exc)
