"""Every command's expected failures: one or two lines on what is wrong and what to do, exit 1.

A traceback only when asked for: `timber-tasks --debug ...` or TIMBER_DEBUG=1. Anything not
recognised here is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Callable
from typing import Any

from timber_tasks.cli.common import DEBUG_ENV, debugging, err_console
from timber_tasks.errors import TimberError

__all__ = ["DEBUG_ENV", "explain", "run_reporting_failures"]

DATABASE_HINT = "Is the database server running, and is DATABASE_URL (or --database-url) right?"
CONNECTION_WORDS = ("connect", "could not translate host", "timeout expired", "unable to open database file")
BROKER_HINT = "Is the server running, and are BROKER_URL and RESULT_BACKEND_URL right?"


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _database(exc: Exception) -> str | None:
    from sqlalchemy import exc as sa

    if isinstance(exc, sa.NoSuchModuleError):
        return f"{exc}: use a URL whose driver is installed, e.g. postgresql://user@host/db or sqlite:///file.db"
    if isinstance(exc, sa.ArgumentError) and "URL" in str(exc):
        return (f"{exc}: set DATABASE_URL (or --database-url) to a URL such as postgresql://user@host/db "
                "or sqlite:///path/to/file.db")
    missing = _missing_table(exc)
    if missing:
        return (f"the database has no table {missing}: create the platform's and the models' tables with "
                "`timber-tasks db upgrade --autogenerate` (a worker or `timber-tasks demo` creates them too)")
    if isinstance(exc, sa.OperationalError | sa.InterfaceError):
        problem = _first_line(exc)
        if any(word in problem.lower() for word in CONNECTION_WORDS):
            return f"cannot reach the database: {problem}\n{DATABASE_HINT}"
        return f"the database refused the command: {problem}"
    return None


MISSING_TABLE = re.compile(r'no such table: (\S+)|relation "([^"]+)" does not exist')


def _missing_table(exc: Exception) -> str | None:
    from sqlalchemy import exc as sa

    if not isinstance(exc, sa.OperationalError | sa.ProgrammingError):
        return None
    match = MISSING_TABLE.search(_first_line(exc))
    return (match.group(1) or match.group(2)) if match else None


def _messaging(exc: Exception) -> str | None:
    import kombu.exceptions
    import redis.exceptions

    if isinstance(exc, kombu.exceptions.OperationalError | redis.exceptions.ConnectionError):
        return f"cannot reach the broker or result backend: {_first_line(exc)}\n{BROKER_HINT}"
    if isinstance(exc, ConnectionError) or (isinstance(exc, OSError) and exc.errno == errno.ECONNREFUSED):
        return f"connection failed: {_first_line(exc)}\n{BROKER_HINT}"
    return None


def _inputs(exc: Exception) -> str | None:
    import pydantic
    import yaml

    from timber_tasks.settings import ENV_NAMES

    if isinstance(exc, pydantic.ValidationError):
        problems = "; ".join(f"{ENV_NAMES.get(str(e['loc'][0]), e['loc'][0]) if e['loc'] else 'settings'}: "
                             f"{e['msg']}" for e in exc.errors())
        return f"invalid setting: {problems}"
    if isinstance(exc, yaml.YAMLError):
        return f"a YAML file is not valid: {exc}".replace("\n", " ")
    if isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError | NotADirectoryError):
        return f"cannot use {exc.filename or 'a file'}: {exc.strerror or exc}; check the path and its permissions"
    if isinstance(exc, ModuleNotFoundError):
        return f"{exc}: a driver or extra this setting needs is not installed (see pyproject.toml)"
    return None


EXPLAINERS: list[Callable[[Exception], str | None]] = [_database, _messaging, _inputs]


def explain(exc: Exception) -> str | None:
    """The message for an expected failure, or None for a bug."""
    if isinstance(exc, TimberError):
        return str(exc)
    for explainer in EXPLAINERS:
        message = explainer(exc)
        if message:
            return message
    return None


def run_reporting_failures(command: Callable[[], Any]) -> None:
    """Run the CLI; an expected failure prints its message and exits 1 (a traceback with TIMBER_DEBUG)."""
    try:
        command()
    except Exception as exc:
        message = None if debugging() else explain(exc)
        if message is None:
            raise
        from rich.markup import escape

        err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False)
        raise SystemExit(1) from None
