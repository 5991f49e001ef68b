"""The restore drill: a pg_dump of the registry, restored into a new database, is the same
database: every table's row count, every history table's content and the id sequences."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from io import StringIO
from pathlib import Path

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection
from psycopg import sql

from registry.backup import conninfo_for, fingerprint
from registry.dbroles import history_tables
from registry.models import DrugAdministration, Patient
from registry.services import workflow
from registry.services.mapping import mapping_approve
from tests.conftest import persona_password
from tests.registry import factories

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True),
              pytest.mark.usefixtures("vocabulary")]


def _client(name: str) -> str:
    found = shutil.which(name) or f"/usr/lib/postgresql/15/bin/{name}"
    assert Path(found).is_file(), f"{name} (PostgreSQL 15 client) is not installed"
    return found


def _libpq_env() -> dict[str, str]:
    db = connection.settings_dict
    env = {**os.environ, "PGHOST": db["HOST"] or "127.0.0.1", "PGPORT": str(db["PORT"] or 5432),
           "PGUSER": db["USER"]}
    if db["PASSWORD"]:
        env["PGPASSWORD"] = db["PASSWORD"]
    return env


@pytest.fixture
def restored_name():
    """The name of a scratch database for the restore, dropped afterwards."""
    name = f"{connection.settings_dict['NAME']}_restore_{uuid.uuid4().hex[:8]}"
    yield name
    with psycopg.connect(conninfo_for(dbname="postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


def _audited_records(site_a, site_b, alice, bob, mona):
    for site, clerk in ((site_a, alice), (site_a, alice), (site_b, bob)):
        factories.full_record(site, clerk)
    drug = DrugAdministration.objects.filter(site=site_a).first()
    drug = workflow.record_submit(drug, acting_user=alice)
    drug = workflow.record_verify(drug, acting_user=mona, password=persona_password("mona"))
    workflow.record_lock(drug, acting_user=mona, password=persona_password("mona"))
    mapping_approve(site_term=drug.drug_term,
                    concept=type(drug.drug).objects.get(code="L01XA02"), acting_user=mona,
                    reason="restore drill re-code")


def test_a_dump_restores_to_the_same_database(tmp_path, restored_name, site_a, site_b, alice,
                                              bob, mona):
    _audited_records(site_a, site_b, alice, bob, mona)
    source = fingerprint(conninfo_for())
    dump = tmp_path / "registry.dump"
    env = _libpq_env()

    subprocess.run([_client("pg_dump"), "--format=custom", "--file", str(dump),
                    connection.settings_dict["NAME"]], check=True, env=env, capture_output=True)
    subprocess.run([_client("createdb"), restored_name], check=True, env=env,
                   capture_output=True)
    subprocess.run([_client("pg_restore"), "--exit-on-error", "--no-owner",
                    "--dbname", restored_name, str(dump)], check=True, env=env,
                   capture_output=True)
    restored = fingerprint(conninfo_for(dbname=restored_name))

    assert restored == source
    # A drill that compares nothing proves nothing: the audited writes are in it.
    assert set(source["history"]) == history_tables()
    assert source["rows"]["registry_patient"] == Patient.objects.count() == 3
    assert source["rows"][Patient.history.model._meta.db_table] >= 3
    assert source["rows"]["registry_historicaldrugadministration"] >= 6
    assert source["sequences"]


def test_the_fingerprint_sees_a_rewritten_history_row(site_a, alice):
    """The comparison would catch a copy whose audit trail differs by one row's reason."""
    factories.patient(site_a, alice)
    before = fingerprint(conninfo_for())
    with connection.cursor() as cursor:  # as the test's superuser, not the app role
        cursor.execute("UPDATE registry_historicalpatient SET history_change_reason = 'edited'")
    after = fingerprint(conninfo_for())
    assert after["rows"] == before["rows"]
    assert after["history"]["registry_historicalpatient"] != (
        before["history"]["registry_historicalpatient"])
    assert {k: v for k, v in after["history"].items() if k != "registry_historicalpatient"} == {
        k: v for k, v in before["history"].items() if k != "registry_historicalpatient"}


def test_the_fingerprint_command_prints_json(site_a, alice):
    factories.patient(site_a, alice)
    out = StringIO()
    call_command("db_fingerprint", stdout=out)
    printed = json.loads(out.getvalue())
    assert printed["rows"]["registry_patient"] == 1
    assert set(printed["history"]) == history_tables()
