"""Which database faults are worth a retry: the messages PostgreSQL gives while it stops, starts or recovers."""

from __future__ import annotations

import psycopg2
import pytest
from sqlalchemy import exc as sa_exc

from timber_tasks.jobs.faults import is_transient


@pytest.mark.parametrize("message", [
    "FATAL:  the database system is shutting down",
    "FATAL:  the database system is starting up",
    "FATAL:  the database system is in recovery mode",
    "FATAL:  terminating connection due to administrator command",
    "server closed the connection unexpectedly",
    'connection to server at "127.0.0.1", port 5432 failed: Connection refused',
])
def test_a_postgresql_that_is_stopping_starting_or_recovering_is_a_transient_fault(message: str) -> None:
    error = sa_exc.OperationalError("SELECT 1", {}, psycopg2.OperationalError(message))
    assert is_transient(error)


def test_bad_input_is_never_transient() -> None:
    error = sa_exc.IntegrityError("INSERT", {}, psycopg2.IntegrityError("duplicate key value"))
    assert not is_transient(error)
    assert not is_transient(ValueError("bad"))
