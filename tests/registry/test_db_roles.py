"""The application's database role may append to the audit trail but never rewrite it."""

from __future__ import annotations

from contextlib import contextmanager
from io import StringIO

import psycopg
import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.db.utils import ProgrammingError
from psycopg import errors, sql

from registry.audit import history_columns
from registry.dbroles import (
    HISTORY_REWRITE_SETTING,
    app_role_grant,
    history_guard_remove,
    history_tables,
)
from registry.models import DrugAdministration, Patient, Site
from registry.services import workflow
from tests.conftest import persona_password
from tests.registry import factories

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

# Roles are cluster-wide: a name of this suite's own.
ROLE = "registry_test_app_role"


def _execute(statement, params=None):
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall() if cursor.description else None


def _drop_role():
    history_guard_remove()  # the grant installs it; other tests run without it
    if _execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [ROLE]):
        _execute(f'DROP OWNED BY "{ROLE}"')
        _execute(f'DROP ROLE "{ROLE}"')


@pytest.fixture
def app_role(transactional_db):
    _drop_role()
    _execute(f'CREATE ROLE "{ROLE}" NOLOGIN')
    yield ROLE
    _execute("RESET ROLE")
    _drop_role()


@contextmanager
def as_role(role):
    _execute(f'SET ROLE "{role}"')
    try:
        yield
    finally:
        _execute("RESET ROLE")


def _refused(statement, because=("permission denied", "must be owner")):
    with pytest.raises(ProgrammingError) as caught:
        _execute(statement)
    assert isinstance(caught.value.__cause__, errors.InsufficientPrivilege), caught.value
    assert any(words in str(caught.value) for words in because), caught.value


def test_history_tables_are_discovered_from_simple_history():
    assert history_tables() >= {Patient.history.model._meta.db_table,
                                Site.history.model._meta.db_table}
    assert all("historical" in table for table in history_tables())
    # Every app's history tables (registry's and the risk models' alias moves), found, not listed.
    from simple_history.models import registered_models

    expected = {m.history.model._meta.db_table for m in registered_models.values()
                if hasattr(m, "history")}
    # ... plus the histories of many-to-many fields (a data request's sites and team).
    m2m = {"research_historicaldatarequest_sites", "research_historicaldatarequest_team"}
    assert history_tables() == expected | m2m
    assert "predictions_historicalalias" in history_tables()


def test_the_app_role_appends_to_history_but_cannot_rewrite_it(app_role, site_a, alice):
    factories.patient(site_a, alice)
    call_command("db_grant_app_role", app_role, stdout=StringIO())
    history = Patient.history.model._meta.db_table
    with as_role(app_role):
        (count,) = _execute(f"SELECT count(*) FROM {history}")[0]  # noqa: S608
        assert count == 1
        columns = ", ".join(history_columns(Patient))
        _execute(f"INSERT INTO {history} ({columns}, history_date, history_type, "  # noqa: S608
                 f"history_change_reason, history_user_id) SELECT {columns}, now(), '~', "
                 f"'appended by the app role', history_user_id FROM {history} LIMIT 1")
        _refused(f"UPDATE {history} SET history_change_reason = 'rewritten'")  # noqa: S608
        _refused(f"DELETE FROM {history}")  # noqa: S608
        _refused(f"TRUNCATE {history}")
        _refused(f"ALTER TABLE {history} DISABLE TRIGGER ALL")
        _refused(f"DROP TABLE {history}")
        # Ordinary tables: the application's everyday writes.
        _execute("UPDATE registry_patient SET birth_year = 1961")
        _execute("DELETE FROM registry_dataquery")
        _refused("TRUNCATE registry_patient")
        _refused("CREATE TABLE registry_sneaky (id int)")
        _refused("UPDATE django_migrations SET name = 'x'")
    reasons = set(Patient.history.values_list("history_change_reason", flat=True))
    assert "rewritten" not in reasons and "appended by the app role" in reasons
    assert Patient.history.count() == 2


def test_every_table_gets_exactly_its_privileges(app_role):
    report = app_role_grant(app_role)
    assert set(report.history) == history_tables()
    assert "registry_patient" in report.ordinary and "auth_user" in report.ordinary
    rows = _execute(
        "SELECT c.relname, has_table_privilege(%s, c.oid, 'SELECT'), "
        "has_table_privilege(%s, c.oid, 'INSERT'), has_table_privilege(%s, c.oid, 'UPDATE'), "
        "has_table_privilege(%s, c.oid, 'DELETE'), has_table_privilege(%s, c.oid, 'TRUNCATE') "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = current_schema() AND c.relkind = 'r'", [app_role] * 5)
    privileges = {name: tuple(flags) for name, *flags in rows}
    for table in report.history:
        assert privileges[table] == (True, True, False, False, False), table
    for table in report.ordinary:
        assert privileges[table] == (True, True, True, True, False), table
    assert privileges["django_migrations"] == (True, False, False, False, False)


@pytest.mark.usefixtures("vocabulary")
def test_a_service_write_works_as_the_app_role(app_role, site_a, alice, mona):
    call_command("db_grant_app_role", app_role, stdout=StringIO())
    with as_role(app_role):
        (current,) = _execute("SELECT current_user")[0]
        assert current == app_role
        patient = factories.full_record(site_a, alice)  # every kind, a mapping, a query
        drug = DrugAdministration.objects.get(patient=patient)
        drug = workflow.record_submit(drug, acting_user=alice)
        drug = workflow.record_verify(drug, acting_user=mona, password=persona_password("mona"))
        drug = workflow.record_lock(drug, acting_user=mona, password=persona_password("mona"))
        factories.patient(site_a, alice)
    assert Patient.objects.count() == 2
    assert DrugAdministration.objects.get(pk=drug.pk).status == "locked"
    assert drug.history.latest("history_id").history_user == mona


def test_the_grant_is_idempotent(app_role):
    first = app_role_grant(app_role)
    assert app_role_grant(app_role) == first


def test_the_grant_refuses_roles_it_cannot_restrict(app_role):
    with pytest.raises(CommandError, match="does not exist"):
        call_command("db_grant_app_role", "registry_no_such_role", stdout=StringIO())
    (superuser,) = _execute("SELECT current_user")[0]
    with pytest.raises(CommandError, match="superuser"):
        call_command("db_grant_app_role", superuser, stdout=StringIO())


def test_the_command_creates_a_login_role_from_the_environment(monkeypatch):
    _drop_role()
    monkeypatch.setenv("TEST_APP_ROLE_PASSWORD", "app-role-password-1")
    try:
        out = StringIO()
        call_command("db_grant_app_role", ROLE, "--password-env", "TEST_APP_ROLE_PASSWORD",
                     stdout=out)
        assert f"created role {ROLE}" in out.getvalue()
        (flags,) = _execute("SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb "
                            "FROM pg_roles WHERE rolname = %s", [ROLE])
        assert flags == (True, False, False, False)
        call_command("db_grant_app_role", ROLE, "--password-env", "TEST_APP_ROLE_PASSWORD",
                     stdout=StringIO())  # again: the password is set, nothing else changes
        params = connection.get_connection_params()
        params.pop("cursor_factory", None)
        params.pop("context", None)
        params.update(user=ROLE, password="app-role-password-1")
        with psycopg.connect(**{k: v for k, v in params.items()
                                if k in ("dbname", "host", "port", "user", "password")}) as own:
            history = Site.history.model._meta.db_table
            with pytest.raises(errors.InsufficientPrivilege):
                own.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(history)))
        monkeypatch.setenv("TEST_APP_ROLE_PASSWORD", "")
        with pytest.raises(CommandError, match="empty"):
            call_command("db_grant_app_role", ROLE, "--password-env", "TEST_APP_ROLE_PASSWORD",
                         stdout=StringIO())
    finally:
        _drop_role()


def test_the_compose_init_script_creates_a_role_the_grant_accepts(tmp_path):
    """deploy/postgres/init-app-role.sh, run as the postgres image runs it (psql as the owner),
    creates a login role that is no superuser; the grant then restricts it."""
    import os
    import shutil
    import subprocess
    from pathlib import Path

    psql = shutil.which("psql") or "/usr/lib/postgresql/15/bin/psql"
    script = Path(__file__).resolve().parents[2] / "deploy" / "postgres" / "init-app-role.sh"
    db = connection.settings_dict
    _drop_role()
    try:
        subprocess.run(["sh", str(script)], check=True, capture_output=True, env={
            **os.environ, "PATH": f"{Path(psql).parent}:{os.environ.get('PATH', '')}",
            "PGHOST": db["HOST"] or "127.0.0.1", "PGPORT": str(db["PORT"] or 5432),
            "POSTGRES_USER": db["USER"], "POSTGRES_DB": db["NAME"],
            "POSTGRES_APP_USER": ROLE, "POSTGRES_APP_PASSWORD": "it's a \"secret\""})
        (flags,) = _execute("SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb "
                            "FROM pg_roles WHERE rolname = %s", [ROLE])
        assert flags == (True, False, False, False)
        report = app_role_grant(ROLE)
        assert set(report.history) == history_tables()
        with as_role(ROLE):
            _refused(f"DELETE FROM {Site.history.model._meta.db_table}")  # noqa: S608
    finally:
        _drop_role()


def test_even_the_owner_rewrites_history_only_on_purpose(app_role, site_a, alice):
    """The guard trigger: a superuser's UPDATE or DELETE of a history row is refused unless
    the session says it is maintenance."""
    factories.patient(site_a, alice)
    report = app_role_grant(app_role)
    assert set(report.guarded) == history_tables()
    guarded = {name for (name,) in _execute(
        "SELECT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
        "WHERE t.tgname = 'registry_history_guard' AND NOT t.tgisinternal")}
    assert guarded == history_tables()
    history = Patient.history.model._meta.db_table
    _refused(f"UPDATE {history} SET history_change_reason = 'x'",  # noqa: S608
             because=("history rows are never changed or deleted (UPDATE on",))
    _refused(f"DELETE FROM {history}", because=("never changed or deleted (DELETE on",))  # noqa: S608
    assert Patient.history.get().history_change_reason != "x"
    with transaction.atomic():
        _execute(f"SET LOCAL {HISTORY_REWRITE_SETTING} = 'on'")
        _execute(f"UPDATE {history} SET history_change_reason = 'maintenance'")  # noqa: S608
    assert Patient.history.get().history_change_reason == "maintenance"
    # Inserting is what the application does all day: not guarded.
    factories.patient(site_a, alice)
    assert Patient.history.count() == 2
