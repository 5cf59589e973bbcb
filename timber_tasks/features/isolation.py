"""Multi-app isolation: each app uses its own tables and scope values plus the shared ones.

Two layers, so neither is the only guard:
- In the library, every service call checks the model's owning app (the `app:` of its
  YAML file) and the `app_scope` value (e.g. the session type) against the Timber's app,
  and refuses another app's data with AccessDeniedError rather than filtering it away.
- On PostgreSQL, row-level security as in seed 003: one NOLOGIN role per app
  (`timber_app_<app>`) with grants on the shared tables and its own, a policy per app
  on every `app_scope` table, and connections of an app's Timber `SET ROLE` to it. The
  login role may be a superuser (which bypasses RLS); the app role never is, so raw SQL
  on an app's connection cannot see another app's rows or tables either.

The platform app (`timber`, the default TIMBER_APP_NAME) is not an app of its own: the
platform's workers (GDPR export, maintenance) act for every app, so it is not restricted.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import text

from timber_tasks.errors import AccessDeniedError, ConfigError, ValidationError
from timber_tasks.models.spec import IDENTIFIER

log = logging.getLogger("timber_tasks.isolation")

PLATFORM_APP = "timber"
ADVISORY_LOCK = 7_351_201  # serialises concurrent installs: GRANT/CREATE POLICY race otherwise


def role_name(app: str) -> str:
    """The PostgreSQL role of an app; the name goes into SQL, so it must be a plain identifier."""
    role = f"timber_app_{app}"
    if not IDENTIFIER.match(role):
        raise ConfigError(f"app name {app!r} cannot name a PostgreSQL role: use letters, digits and _ "
                          "(at most 52 characters)")
    return role


def scope_function(table: str) -> str:
    return f"timber_scope_of_{table}"[:63]


def known_apps(registry: Any) -> list[str]:
    apps: set[str] = set()
    for spec in registry.specs():
        if spec.app:
            apps.add(spec.app)
        if spec.spec.app_scope is not None:
            apps.update(spec.spec.app_scope.values)
    return sorted(apps)


def check_model(app: str, model: type[Any]) -> None:
    """Refuse a model that belongs to another app."""
    owner = model.timber_spec.app
    if owner is not None and owner != app and app != PLATFORM_APP:
        raise AccessDeniedError(f"app {app!r} may not use this model: it belongs to app {owner!r}",
                                model=model.timber_spec.name)


def allowed_scope(app: str, model: type[Any]) -> tuple[str, ...] | None:
    """The scope values (e.g. session types) the app may use; None when unrestricted."""
    scope = model.timber_spec.spec.app_scope
    if scope is None or app == PLATFORM_APP:
        return None
    return tuple(scope.values.get(app, ()))


def check_scope(app: str, model: type[Any], value: Any, ids: Any = None) -> None:
    """Refuse another app's scope value; reject one no app declares as invalid input."""
    allowed = allowed_scope(app, model)
    spec = model.timber_spec.spec
    if allowed is None and spec.app_scope is not None:  # the platform: any value some app declares
        declared = sorted({v for values in spec.app_scope.values.values() for v in values})
        if value not in declared:
            raise ValidationError(model.timber_spec.name, spec.app_scope.column,
                                  f"unknown {spec.app_scope.column} {value!r}; allowed: {', '.join(declared)}", ids=ids)
    if allowed is None or value in allowed:
        return
    name = model.timber_spec.name
    column = spec.app_scope.column
    owners = [a for a, values in spec.app_scope.values.items() if value in values]
    if owners:
        raise AccessDeniedError(f"{column} {value!r} belongs to app {owners[0]!r}; app {app!r} may use "
                                f"{', '.join(allowed) or 'none'}", model=name, ids=ids)
    raise ValidationError(name, column, f"unknown {column} {value!r} for app {app!r}; "
                          f"allowed: {', '.join(allowed) or 'none'}", ids=ids)


def install(timber: Any, shared_tables: tuple[str, ...] = ()) -> None:
    """PostgreSQL only: roles, grants and row-level security policies per app (idempotent).

    shared_tables: platform tables every app writes too (the outbox), named by the caller.
    """
    if timber.db.dialect != "postgresql":
        return
    apps = known_apps(timber.registry)
    if not apps:
        return
    with timber.db.engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": ADVISORY_LOCK})
        superuser = conn.execute(text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")).scalar()
        for app in apps:
            _create_role(conn, role_name(app), grant_to_me=not superuser)
        for spec in timber.registry.specs():
            if spec.inheritance == "single":
                continue
            for app in apps:
                if spec.app is None or spec.app == app:
                    conn.execute(text(f'GRANT SELECT, INSERT, UPDATE, DELETE ON "{spec.table_name}" '
                                      f'TO "{role_name(app)}"'))
            if spec.spec.app_scope is not None:
                _install_policies(conn, spec, apps)
        roles = ", ".join(f'"{role_name(a)}"' for a in apps)
        # Apps enqueue jobs in their own transactions (the outbox); job records and dead
        # letters are the platform workers' alone.
        for table in shared_tables:
            conn.execute(text(f'GRANT SELECT, INSERT, UPDATE, DELETE ON "{table}" TO {roles}'))
        conn.execute(text(f"GRANT USAGE ON SCHEMA public TO {roles}"))
        conn.execute(text(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {roles}"))


def activate(timber: Any) -> None:
    """PostgreSQL only: make every connection of an app's Timber act as the app's role."""
    if timber.db.dialect != "postgresql" or timber.app_name not in known_apps(timber.registry):
        return
    role = role_name(timber.app_name)
    shared = next((s.table_name for s in timber.registry.specs() if s.app is None), None)
    with timber.db.engine.connect() as conn:
        ready = conn.execute(text(
            "SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :r) THEN false "
            "WHEN CAST(:t AS text) IS NULL THEN true "
            "WHEN to_regclass(:t) IS NULL THEN false "
            "ELSE has_table_privilege(:r, :t, 'SELECT') END"),
            {"r": role, "t": shared}).scalar()
    if not ready:
        raise ConfigError(f"app {timber.app_name!r}: PostgreSQL role {role!r} or its grants are missing in this "
                          "database; run initialize_timber(create_tables=True) once (or `timber-tasks demo`) "
                          "to install roles, grants and row-level security policies")
    timber.db.use_role(role)


def _create_role(conn: Any, role: str, grant_to_me: bool) -> None:
    conn.execute(text(
        "DO $$ BEGIN "
        f'CREATE ROLE "{role}" NOLOGIN NOSUPERUSER NOBYPASSRLS; '
        "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"))
    if grant_to_me:  # a non-superuser login role may only SET ROLE to roles it is a member of
        conn.execute(text(f'GRANT "{role}" TO CURRENT_USER'))


def _install_policies(conn: Any, spec: Any, apps: list[str]) -> None:
    # ALTER TABLE and DROP/CREATE POLICY take an ACCESS EXCLUSIVE lock: every worker runs this at
    # start-up, so only what is missing or changed is touched (policies carry their YAML in a comment).
    table, scope = spec.table_name, spec.spec.app_scope
    if not conn.execute(text("SELECT relrowsecurity FROM pg_class WHERE oid = to_regclass(:t)"), {"t": table}).scalar():
        conn.execute(text(f'ALTER TABLE "{table}" ENABLE ROW LEVEL SECURITY'))
    existing = dict(conn.execute(text(
        "SELECT p.polname, obj_description(p.oid, 'pg_policy') FROM pg_policy p "
        "WHERE p.polrelid = to_regclass(:t)"), {"t": table}).all())
    for app in apps:
        policy = f"timber_{app}_{table}"[:63]
        values = scope.values.get(app, ())
        fingerprint = f"timber: {scope.column} in {list(values)}"
        if existing.get(policy) == fingerprint:
            continue
        if policy in existing:
            conn.execute(text(f'DROP POLICY "{policy}" ON "{table}"'))
        if not values:
            continue  # no policy for the role: row-level security then shows it no row at all
        literals = ", ".join("'" + v.replace("'", "''") + "'" for v in values)
        conn.execute(text(
            f'CREATE POLICY "{policy}" ON "{table}" FOR ALL TO "{role_name(app)}" '
            f'USING ("{scope.column}" IN ({literals})) WITH CHECK ("{scope.column}" IN ({literals}))'))
        conn.execute(text(f'COMMENT ON POLICY "{policy}" ON "{table}" IS :c'), {"c": fingerprint})
    # The one thing an app may learn about a row it cannot see: whose it is, so a service can
    # answer "another app's row" (AccessDeniedError) instead of a misleading "not found".
    pk = [c.name for c in spec.columns if c.primary_key]
    if len(pk) == 1:
        fn = scope_function(table)
        conn.execute(text(
            f'CREATE OR REPLACE FUNCTION "{fn}"(key text) RETURNS text LANGUAGE sql STABLE SECURITY DEFINER '
            f'SET search_path = public AS $f$ SELECT "{scope.column}"::text FROM "{table}" '
            f'WHERE "{pk[0]}"::text = key $f$'))
        conn.execute(text(f'REVOKE ALL ON FUNCTION "{fn}"(text) FROM PUBLIC'))
        roles = ", ".join(f'"{role_name(a)}"' for a in apps)
        conn.execute(text(f'GRANT EXECUTE ON FUNCTION "{fn}"(text) TO {roles}'))


def hidden_scope_value(timber: Any, model: type[Any], pk: Any) -> str | None:
    """On PostgreSQL under an app role: the scope value of a row RLS hides, else None."""
    if timber.db.dialect != "postgresql" or timber.db.role is None or model.timber_spec.spec.app_scope is None:
        return None
    fn = scope_function(model.timber_spec.table_name)
    with timber.db.engine.connect() as conn:
        value: str | None = conn.execute(text(f'SELECT "{fn}"(:k)'), {"k": str(pk)}).scalar()
    return value
