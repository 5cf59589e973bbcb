"""Alembic environment: the target schema is the YAML registry of the running Timber."""

from __future__ import annotations

from typing import Any

from alembic import context

from timber_tasks.migrations import include_object, render_item, target_metadata

config = context.config
timber = config.attributes["timber"]


def run_migrations_online() -> None:
    with timber.db.engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata(timber),
            include_object=include_object,
            render_as_batch=timber.db.dialect == "sqlite",  # SQLite cannot ALTER most things
            compare_type=True,
            render_item=render_item,
        )
        with context.begin_transaction():
            context.run_migrations()


def _offline_unsupported(*_: Any) -> None:
    raise SystemExit("offline (SQL script) migrations are not supported; run against a database")


if context.is_offline_mode():
    _offline_unsupported()
else:
    run_migrations_online()
