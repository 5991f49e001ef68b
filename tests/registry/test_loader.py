"""The cohort loader writes through the one bulk writer and runs the rulebook, as an import does:
a hard rule refuses the whole load, a soft rule opens data queries on the loaded rows."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from registry.models import (
    Cycle,
    DataQuery,
    DrugAdministration,
    FollowUp,
    Patient,
    SiteTerm,
    TreatmentLine,
)
from registry.synth import generator as g
from registry.synth.load import load_cohorts

ROOT = Path(__file__).resolve().parents[2]


def _cohort(seed: int = 11, patients: int = 80):
    return g.generate_site(g.plan_sites(n_sites=1, n_patients=patients, seed=seed)[0])


def _counts():
    return (Patient.objects.count(), Cycle.objects.count(), SiteTerm.objects.count(),
            Patient.history.count(), DataQuery.objects.count())


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("vocabulary")
@pytest.mark.parametrize("plant, code", [
    ("cycle_before_line", "CYCLE_BEFORE_LINE"),
    ("bsa", "CYCLE_BSA_IMPOSSIBLE"),
    ("line_before_diagnosis", "LINE_BEFORE_DIAGNOSIS"),
    ("dose", "DOSE_IMPOSSIBLE"),
])
def test_a_hard_rule_refuses_the_whole_load(plant, code):
    cohort = _cohort()
    if plant == "cycle_before_line":
        first = cohort.cycles.index[0]
        cohort.cycles.loc[first, "start_date"] -= 400
    elif plant == "bsa":
        cohort.cycles.loc[cohort.cycles.index[0], "bsa"] = 9.9
    elif plant == "line_before_diagnosis":
        line = cohort.lines.iloc[0]
        cohort.lines.loc[cohort.lines.index[0], "start_date"] -= 2000
        its_cycles = ((cohort.cycles["pidx"] == line["pidx"])
                      & (cohort.cycles["line_no"] == line["line_no"]))
        cohort.cycles.loc[its_cycles, "start_date"] -= 2000
    else:
        antineoplastic = cohort.drugs.index[cohort.drugs["dose_unit"] == "mg"][0]
        cohort.drugs.loc[antineoplastic, "dose"] = 99_999_999
    before = _counts()
    with pytest.raises(Exception, match=code) as refused:
        load_cohorts([cohort], acting_user=None, reason="synthetic: planted error")
    assert "nothing was written" in str(refused.value)
    assert _counts() == before


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("vocabulary")
def test_a_soft_rule_opens_a_query_on_the_loaded_row():
    cohort = _cohort(seed=12)
    cohort.cycles.loc[cohort.cycles.index[0], "bsa"] = 3.2  # plausible ceiling is lower
    f = cohort.followups
    dead = f.index[f["vital_status"] == "dead"]
    assert len(dead) > 0  # the cohort records deaths
    f.loc[dead, "cause_of_death"] = ""
    stats = load_cohorts([cohort], acting_user=None, reason="synthetic: planted doubt")
    bsa = DataQuery.objects.get(record_model="cycle", field="bsa_m2", automatic=True)
    cycle = Cycle.objects.get(pk=bsa.record_id)
    assert str(cycle.bsa_m2) == "3.20"
    assert bsa.patient_id == cycle.patient_id and bsa.site_id == cycle.site_id
    assert "3.2" in bsa.text
    assert DataQuery.history.filter(history_change_reason="synthetic: planted doubt").count() \
        == DataQuery.objects.count()
    deaths = FollowUp.objects.filter(vital_status="dead").count()
    assert DataQuery.objects.filter(record_model="followup", field="cause_of_death").count() \
        == deaths
    assert stats.rows["queries"] == DataQuery.objects.count()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("vocabulary")
def test_loaded_rows_have_history_dated_when_they_were_recorded():
    load_cohorts([_cohort(seed=13)], acting_user=None, reason="synthetic: dated")
    for model in (Patient, TreatmentLine, Cycle, DrugAdministration):
        rows = dict(model.objects.values_list("pk", "created_at"))
        history = dict(model.history.values_list("id", "history_date"))
        assert rows == history
        assert set(model.history.values_list("history_type", flat=True)) == {"+"}
    # Ids came from the sequences: the next ordinary write does not collide.
    line = TreatmentLine.objects.first()
    clone = Cycle.objects.filter(line=line).order_by("-cycle_no").first()
    clone.pk, clone.cycle_no = None, clone.cycle_no + 50
    clone.save()
    assert clone.pk > max(Cycle.objects.exclude(pk=clone.pk).values_list("pk", flat=True))


def test_the_embedded_demo_loads_through_the_same_writer_on_sqlite(tmp_path):
    """`make demo`'s database: SQLite, the loader and its rulebook, in a real process."""
    database = tmp_path / "demo.sqlite3"
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{database}", "DEBUG": "true",
           "CELERY_TASK_ALWAYS_EAGER": "true"}
    for command in (["migrate", "--noinput", "-v0"],
                    ["demo_setup", "--patients", "60", "--sites", "2"]):
        done = subprocess.run([sys.executable, "manage.py", *command], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
    with sqlite3.connect(database) as db:
        patients = db.execute("SELECT count(*) FROM registry_patient").fetchone()[0]
        cycles = db.execute("SELECT count(*) FROM registry_cycle").fetchone()[0]
        history = db.execute("SELECT count(*) FROM registry_historicalcycle").fetchone()[0]
        stamps = db.execute("SELECT c.created_at = h.history_date FROM registry_cycle c "
                            "JOIN registry_historicalcycle h ON h.id = c.id").fetchall()
        sequence = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'registry_cycle'"
                              ).fetchone()[0]
        highest = db.execute("SELECT max(id) FROM registry_cycle").fetchone()[0]
    assert patients == 60
    assert cycles > 0 and history == cycles
    assert all(same for (same,) in stamps)
    assert sequence >= highest
