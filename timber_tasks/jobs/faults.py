"""Which failures are worth a retry: lost connections, deadlocks, rate limits. Nothing else is."""

from __future__ import annotations

import socket

from sqlalchemy import exc as sa_exc

# SQLSTATEs that a retry of the same transaction can succeed after.
TRANSIENT_SQLSTATES = frozenset({
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
    "55P03",  # lock_not_available
    "57P01",  # admin_shutdown
    "57P02",  # crash_shutdown
    "57P03",  # cannot_connect_now: the database system is starting up, shutting down or in recovery
    "53300",  # too_many_connections
    "08000", "08003", "08006", "08001", "08004",  # connection exceptions
})

TRANSIENT_SQLITE_MESSAGES = ("database is locked", "database is busy", "disk i/o error")
# PostgreSQL says these while connecting, before any SQLSTATE reaches the driver's error object.
TRANSIENT_SERVER_MESSAGES = (
    "server closed the connection", "could not connect", "connection refused", "terminating connection",
    "the database system is shutting down", "the database system is starting up",
    "the database system is in recovery mode", "the database system is not yet accepting connections",
    "connection to server", "ssl connection has been closed",
)


class TransientError(Exception):
    """Raised by job code for a fault it knows to be passing (e.g. a provider's rate limit)."""


def is_transient(exc: BaseException) -> bool:
    """True for faults a later attempt may not meet; bad input and bugs are never transient."""
    if isinstance(exc, TransientError | ConnectionError | TimeoutError | socket.timeout):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        code = getattr(exc.orig, "pgcode", None)
        if code in TRANSIENT_SQLSTATES:
            return True
        message = str(exc.orig).lower()
        if isinstance(exc, sa_exc.OperationalError) and (
            (code is None and any(m in message for m in TRANSIENT_SQLITE_MESSAGES))
            or any(m in message for m in TRANSIENT_SERVER_MESSAGES)
        ):
            return True
    if isinstance(exc, sa_exc.TimeoutError | sa_exc.DisconnectionError):
        return True
    # Broker and cache client faults, recognised by type name so neither client must be imported here.
    return type(exc).__name__ in {"ConnectionError", "OperationalError", "TimeoutError", "BusyLoadingError"} and (
        type(exc).__module__.split(".")[0] in {"redis", "kombu", "amqp"}
    )
