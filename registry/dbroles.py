"""The database role the application connects as, and what it may do.

Two PostgreSQL roles (docs/backup.md, README "Database roles"):
- the owner, which owns the schema and runs migrations (and the seed/benchmark commands,
  which drop and re-add foreign keys);
- the application role (`settings.DATABASE_APP_ROLE`), which web, worker and beat use. It
  reads and writes the ordinary tables, but may only read and append to the history tables:
  no UPDATE, DELETE or TRUNCATE, and as a non-owner no ALTER or DROP. So the audit trail
  cannot be rewritten through the application, whatever its code does.

`app_role_grant` runs as the owner after every migrate (the compose migrate job does this):
it sets the privileges table by table from the models Django knows, so a history table added
by a new migration is covered the next time it runs. Default privileges are deliberately not
used for tables: they would give a future history table the privileges of an ordinary one.

Defence in depth, for the owner and superusers too: `history_guard_install` puts a trigger on
every history table that refuses UPDATE and DELETE unless the session says
`SET registry.history_rewrite = 'on'` (a deliberate, visible act of maintenance). TRUNCATE is
left to privileges (the test suite empties tables with it between tests).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.apps import apps
from django.db import connections, transaction
from psycopg import sql
from simple_history.models import HistoricalChanges

from registry.errors import ValidationFailed

ORDINARY_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")
HISTORY_PRIVILEGES = ("SELECT", "INSERT")
# Read by `manage.py check` and friends; written only by migrate, as the owner.
READ_ONLY_TABLES = frozenset({"django_migrations"})
# The session setting that lets the owner rewrite history rows on purpose.
HISTORY_REWRITE_SETTING = "registry.history_rewrite"
_GUARD_FUNCTION = "registry_history_guard"
_GUARD_TRIGGER = "registry_history_guard"


@dataclass(frozen=True)
class GrantReport:
    role: str
    ordinary: tuple[str, ...]
    history: tuple[str, ...]
    read_only: tuple[str, ...]
    guarded: tuple[str, ...] = ()


def history_tables() -> set[str]:
    """Every history table django-simple-history keeps, from its registered models."""
    return {m._meta.db_table for m in apps.get_models() if issubclass(m, HistoricalChanges)}


def app_role_grant(role: str, *, using: str = "default") -> GrantReport:
    """Give `role` exactly the application's privileges on this database. Idempotent: every
    earlier table privilege of the role is revoked first, then granted again table by table.
    Refuses a role that is missing, a superuser, or owns the tables (privileges could not
    restrict it)."""
    connection = connections[using]
    if connection.vendor != "postgresql":
        raise ValidationFailed("Database roles need PostgreSQL.", field="database")
    with transaction.atomic(using=using), connection.cursor() as cursor:
        cursor.execute("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = %s", [role])
        found = cursor.fetchone()
        if found is None:
            raise ValidationFailed(
                f"The role {role!r} does not exist; create it first (docs/backup.md).",
                field="role")
        if found[0] or found[1]:
            raise ValidationFailed(
                f"The role {role!r} is a superuser (or bypasses row security): no privilege "
                "can restrict it. Give the application a role of its own.", field="role")
        cursor.execute("SELECT current_database(), current_schema(), current_user")
        database, schema, owner = cursor.fetchone()
        if role == owner:
            raise ValidationFailed(
                f"{role!r} is the role running this command (the owner); the application "
                "needs a role of its own.", field="role")
        existing = set(connection.introspection.table_names(cursor))
        known = set(connection.introspection.django_table_names(only_existing=True))
        history = sorted(history_tables() & existing)
        read_only = sorted(READ_ONLY_TABLES & existing)
        ordinary = sorted(known - set(history) - set(read_only))
        ident = sql.Identifier
        statements = [
            sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(ident(database),
                                                                          ident(role)),
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(ident(schema), ident(role)),
            sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA {} FROM {}").format(ident(schema),
                                                                          ident(role)),
            sql.SQL("REVOKE ALL ON ALL SEQUENCES IN SCHEMA {} FROM {}").format(ident(schema),
                                                                             ident(role)),
            # nextval for new ids (copy_frame_audited); setval stays with the owner.
            sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {} TO {}").format(
                ident(schema), ident(role)),
        ]
        for tables, privileges in ((ordinary, ORDINARY_PRIVILEGES),
                                   (history, HISTORY_PRIVILEGES),
                                   (read_only, ("SELECT",))):
            for table in tables:
                statements.append(sql.SQL("GRANT {} ON TABLE {} TO {}").format(
                    sql.SQL(", ").join(map(sql.SQL, privileges)),
                    ident(schema, table), ident(role)))
        for statement in statements:
            cursor.execute(statement.as_string(connection.connection))
        guarded = history_guard_install(using=using)
    return GrantReport(role=role, ordinary=tuple(ordinary), history=tuple(history),
                       read_only=tuple(read_only), guarded=tuple(guarded))


def history_guard_install(*, using: str = "default") -> list[str]:
    """(Re)create the trigger refusing UPDATE and DELETE on every history table; returns the
    tables guarded. Idempotent; needs the owner."""
    connection = connections[using]
    with transaction.atomic(using=using), connection.cursor() as cursor:
        cursor.execute(sql.SQL("""
            CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF current_setting({setting}, true) = 'on' THEN
                    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
                END IF;
                RAISE EXCEPTION 'history rows are never changed or deleted (% on %)',
                    TG_OP, TG_TABLE_NAME
                    USING ERRCODE = 'insufficient_privilege',
                          HINT = 'Maintenance only: SET LOCAL ' || {setting} || ' = on';
            END $$""").format(function=sql.Identifier(_GUARD_FUNCTION),
                             setting=sql.Literal(HISTORY_REWRITE_SETTING))
                       .as_string(connection.connection))
        existing = set(connection.introspection.table_names(cursor))
        tables = sorted(history_tables() & existing)
        for table in tables:
            cursor.execute(sql.SQL(
                "CREATE OR REPLACE TRIGGER {trigger} BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION {function}()").format(
                    trigger=sql.Identifier(_GUARD_TRIGGER), table=sql.Identifier(table),
                    function=sql.Identifier(_GUARD_FUNCTION)).as_string(connection.connection))
    return tables


def history_guard_remove(*, using: str = "default") -> None:
    """Drop the guard triggers and their function (a test's teardown; an owner's choice)."""
    connection = connections[using]
    with transaction.atomic(using=using), connection.cursor() as cursor:
        cursor.execute(sql.SQL("DROP FUNCTION IF EXISTS {}() CASCADE").format(
            sql.Identifier(_GUARD_FUNCTION)).as_string(connection.connection))


def app_role_ensure(role: str, *, password: str, using: str = "default") -> bool:
    """Create the application's login role if absent (no superuser, no role or database
    creation), else set its password. Returns whether it was created. Needs a role that may
    create roles (the owner in docker-compose.yml)."""
    if not password:
        raise ValidationFailed("The application role needs a password.", field="password")
    connection = connections[using]
    with transaction.atomic(using=using), connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role])
        created = cursor.fetchone() is None
        statement = sql.SQL(
            "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
            "NOBYPASSRLS PASSWORD {}" if created else "ALTER ROLE {} PASSWORD {}"
        ).format(sql.Identifier(role), sql.Literal(password))
        cursor.execute(statement.as_string(connection.connection))
    return created
