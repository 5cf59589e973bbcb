"""initialize_timber(): settings, model registry and database manager of one process."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from timber_tasks.db import DatabaseManager
from timber_tasks.errors import ConfigError
from timber_tasks.features import isolation, writes
from timber_tasks.features.cache import CacheManager
from timber_tasks.features.encryption import KeyRing
from timber_tasks.gdpr import audit as gdpr_audit  # noqa: F401  (the personal-data change record, its tables)
from timber_tasks.gdpr.tables import PersonalDataChange
from timber_tasks.jobs import sealing
from timber_tasks.jobs.tables import JobRecord, OutboxMessage, system_metadata
from timber_tasks.models import constraints
from timber_tasks.models.registry import ModelRegistry
from timber_tasks.settings import Settings

if TYPE_CHECKING:
    from timber_tasks.services import Services


@dataclass
class Timber:
    """What initialize_timber() returns: the settings, the registry and the database."""

    settings: Settings
    registry: ModelRegistry
    db: DatabaseManager
    keyring: KeyRing | None = None
    cache: CacheManager | None = None
    _services: Services | None = field(default=None, repr=False)

    @property
    def app_name(self) -> str:
        return self.settings.app_name

    def get_model(self, name: str) -> type[Any]:
        return self.registry.get(name)

    def create_tables(self) -> None:
        """Create missing tables: the YAML models' and the platform's own (jobs, outbox, dead letters)."""
        self.db.create_tables(self.registry.metadata)
        self.db.create_tables(system_metadata)

    @property
    def services(self) -> Services:
        """The domain services acting for this app (built on first use)."""
        if self._services is None:
            from timber_tasks.services import Services

            self._services = Services(self)
        return self._services

    def close(self) -> None:
        """Stop the cache listener and release the database connections."""
        if self.cache is not None:
            self.cache.close()
        self.db.dispose()


_current: Timber | None = None
_current_pid: int | None = None
_lock = threading.Lock()
_acting: dict[str, Timber] = {}  # Timbers of the other apps this process runs jobs for (see for_app)


def build_timber(
    app_name: str | None = None,
    model_config_dirs: list[str | Path] | None = None,
    database_url: str | None = None,
    create_tables: bool = True,
    app_role: bool = True,
    require_keys: bool = True,
    **settings: Any,
) -> Timber:
    """A Timber for one app, without making it the process's current one (see initialize_timber)."""
    resolved = Settings.load(
        app_name=app_name,
        model_config_dirs=tuple(Path(d) for d in model_config_dirs) if model_config_dirs else None,
        database_url=database_url,
        **settings,
    )
    keys = [k.get_secret_value() for k in resolved.encryption_keys]
    keyring = KeyRing(keys) if keys else None
    db = DatabaseManager(resolved.resolved_database_url, slow_query_ms=resolved.slow_query_ms)
    registry = ModelRegistry.from_dirs(
        resolved.model_config_dirs, app_name=resolved.app_name, dialect=db.dialect, keyring=keyring
    )
    encrypted = [m.timber_spec.name for m in registry.with_feature("encryption")]
    if encrypted and keyring is None and require_keys:
        db.dispose()
        raise ConfigError(
            f"model(s) {', '.join(encrypted)} encrypt fields, but no encryption key is configured: "
            "set TIMBER_ENCRYPTION_KEYS (comma-separated Fernet keys, newest first; "
            "`timber-tasks keys generate` makes one)"
        )
    timber = Timber(settings=resolved, registry=registry, db=db, keyring=keyring)
    db.explain_integrity = constraints.explainer(registry, lambda: db.engine)
    sealing.use_keyring(keyring)
    timber.cache = CacheManager.for_timber(timber)
    writes.attach(timber)
    if registry.with_feature("vector_search"):
        # The after-write step queues embedding jobs from a hook the embedding tasks register: an app
        # that never imported them would commit vector_search rows that are never embedded.
        import timber_tasks.tasks.embeddings  # noqa: F401
    if create_tables:
        timber.create_tables()
        # Apps enqueue jobs in their own transactions (the outbox); a job acting for an app records its
        # idempotency key in the effect's transaction under the app's role; apps' writes to personal
        # data are recorded from their own connections.
        isolation.install(timber, shared_tables=(OutboxMessage.__tablename__, JobRecord.__tablename__,
                                                 PersonalDataChange.__tablename__))
    if app_role:
        isolation.activate(timber)
    return timber


def initialize_timber(
    app_name: str | None = None,
    model_config_dirs: list[str | Path] | None = None,
    database_url: str | None = None,
    create_tables: bool = True,
    app_role: bool = True,
    require_keys: bool = True,
    **settings: Any,
) -> Timber:
    """Load every model YAML under the dirs, build the models and (optionally) create tables.

    On PostgreSQL, create_tables also installs the per-app roles and row-level security
    policies, and app_role makes an app's connections act as its role (migrations, which
    need the owner's rights, pass app_role=False). require_keys=False lets commands that
    read only the schema or the platform's tables run without TIMBER_ENCRYPTION_KEYS.

    Arguments not given come from the environment, then from the embedded defaults.
    The result also becomes the process's current Timber, used by get_model().
    """
    global _current, _current_pid
    timber = build_timber(app_name, model_config_dirs, database_url, create_tables, app_role, require_keys,
                          **settings)
    with _lock:
        if _current is not None and _current.db is not timber.db:
            _current.close()
        _current, _current_pid = timber, os.getpid()
        _acting.clear()
    return timber


def current_app_name() -> str:
    """The app this process acts for: its Timber's, else TIMBER_APP_NAME, else the platform app."""
    if _current is not None:
        return _current.app_name
    return os.environ.get("TIMBER_APP_NAME") or isolation.PLATFORM_APP


def current() -> Timber:
    """The Timber of this process; raises when initialize_timber() was never called."""
    if _current is None:
        raise ConfigError(
            "Timber is not initialized in this process: call timber_tasks.initialize_timber() first"
        )
    return _current


def for_this_process() -> Timber:
    """The Timber of this process, loading it (registry once, own connections) after a fork or at first use."""
    if _current is None or _current_pid != os.getpid():
        return initialize_timber(create_tables=False)
    return _current


def for_app(app_name: str | None) -> Timber:
    """The Timber acting for app_name in this process (a worker runs jobs for every app that sends them).

    The process's own Timber when the name is its app (or None); otherwise one built once per
    process for that app: its models, its scopes and, on PostgreSQL, its role.
    """
    own = for_this_process()
    if not app_name or app_name == own.app_name:
        return own
    with _lock:
        timber = _acting.get(app_name)
    if timber is None:
        timber = build_timber(app_name=app_name, create_tables=False,
                              model_config_dirs=list(own.settings.model_config_dirs),
                              database_url=own.settings.database_url)
        with _lock:
            timber = _acting.setdefault(app_name, timber)
    return timber


def get_model(name: str) -> type[Any]:
    """The mapped class of a registered model; unknown names list close matches."""
    return current().get_model(name)


def reset() -> None:
    """Forget the current Timber (tests, and workers that reload the registry)."""
    global _current
    with _lock:
        if _current is not None:
            _current.close()
        _current = None
        for timber in _acting.values():
            timber.close()
        _acting.clear()

