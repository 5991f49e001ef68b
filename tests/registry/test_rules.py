"""The rulebook: every rule on the form path and the import path with the same code and
message, each rule's own examples, and the defects the rulebook closes."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
from django.core.management import call_command
from django.db import transaction

from registry import rules
from registry.errors import ValidationFailed
from registry.models import (
    AdverseEvent,
    Concept,
    Cycle,
    DataQuery,
    DrugAdministration,
    FollowUp,
    ImportBatch,
    LabResult,
    Patient,
    TreatmentLine,
)
from registry.pseudonyms import hospital_number_hash, hospital_number_hash_legacy
from registry.services import clinical, workflow
from registry.services.imports import batch_create, extract_import
from registry.services.mapping_files import mappings_import
from registry.services.organisation import site_upsert
from registry.synth import generator as g
from registry.views.terms import propose_grade
from tests.registry.test_imports import GOOD

pytestmark = pytest.mark.usefixtures("vocabulary")

D = dt.date
DEAD = {"followups.csv": "patient_no,followup_date,vital_status,progression,cause_of_death\n"
                         "H001,2024-09-01,dead,N,disease progression\n"}
REGIMENS_END = ("patient_no,line_no,regimen,intent,start_date,end_date\n"
                "H001,1,PP,palliative,2024/3/15,\n")
CYCLES_BSA = ("patient_no,line_no,cycle_no,start_date,bsa_m2\n"
              "H001,1,1,20240315,\nH001,1,2,2024年4月5日,\n")
AES_RESOLVED = "patient_no,term,grade,onset_date,resolved_date,serious\n"
FOLLOWUPS_FULL = ("patient_no,followup_date,vital_status,progression,progression_date,"
                  "cause_of_death\n")


def add(name: str, line: str) -> dict:
    return {name: GOOD[name] + line + "\n"}


# code: (the base both paths start from, the import's change, the form's call of the same
# record as the view makes it). Hard rules: the same values on both paths. Soft rules: the
# import writes its row, so the form's record has another key and the same message.
SCENARIOS = {
    "DIAGNOSIS_BEFORE_BIRTH": ({}, add("diagnoses.csv", "H001,1950-01-05,肺癌,IVA,1"),
                               lambda c: clinical.diagnosis_record(
                                   patient=c.patient, diagnosis_date=D(1950, 1, 5),
                                   cancer="肺癌", acting_user=c.user)),
    "DIAGNOSIS_AFTER_DEATH": (DEAD, add("diagnoses.csv", "H001,2024-10-01,肺癌,IVA,1"),
                              lambda c: clinical.diagnosis_record(
                                  patient=c.patient, diagnosis_date=D(2024, 10, 1),
                                  cancer="肺癌", acting_user=c.user)),
    "LINE_BEFORE_DIAGNOSIS": ({}, add("regimens.csv", "H001,2,PP,palliative,2024-01-01"),
                              lambda c: clinical.treatment_line_record(
                                  patient=c.patient, line_no=2, start_date=D(2024, 1, 1),
                                  regimen="PP", acting_user=c.user)),
    "LINE_ENDS_BEFORE_START": (
        {}, {"regimens.csv": REGIMENS_END + "H001,2,PP,palliative,2024-06-01,2024-05-01\n"},
        lambda c: clinical.treatment_line_record(
            patient=c.patient, line_no=2, start_date=D(2024, 6, 1), end_date=D(2024, 5, 1),
            regimen="PP", acting_user=c.user)),
    "LINE_AFTER_DEATH": (DEAD, add("regimens.csv", "H001,2,PP,palliative,2024-10-01"),
                         lambda c: clinical.treatment_line_record(
                             patient=c.patient, line_no=2, start_date=D(2024, 10, 1),
                             regimen="PP", acting_user=c.user)),
    "CYCLE_BEFORE_LINE": ({}, add("cycles.csv", "H001,1,3,2024-03-10"),
                          lambda c: clinical.cycle_record(
                              line=c.line, cycle_no=3, start_date=D(2024, 3, 10),
                              acting_user=c.user)),
    "CYCLE_BEFORE_DIAGNOSIS": ({}, add("cycles.csv", "H001,1,3,2024-03-01"),
                               lambda c: clinical.cycle_record(
                                   line=c.line, cycle_no=3, start_date=D(2024, 3, 1),
                                   acting_user=c.user)),
    "CYCLE_AFTER_DEATH": (DEAD, add("cycles.csv", "H001,1,3,2024-10-01"),
                          lambda c: clinical.cycle_record(
                              line=c.line, cycle_no=3, start_date=D(2024, 10, 1),
                              acting_user=c.user)),
    "CYCLE_BSA_IMPOSSIBLE": ({}, {"cycles.csv": CYCLES_BSA + "H001,1,3,2024-04-26,9.9\n"},
                             lambda c: clinical.cycle_record(
                                 line=c.line, cycle_no=3, start_date=D(2024, 4, 26),
                                 bsa_m2=Decimal("9.9"), acting_user=c.user)),
    "CYCLE_BSA_IMPLAUSIBLE": ({}, {"cycles.csv": CYCLES_BSA + "H001,1,3,2024-04-26,3.2\n"},
                              lambda c: clinical.cycle_record(
                                  line=c.line, cycle_no=4, start_date=D(2024, 5, 17),
                                  bsa_m2=Decimal("3.20"), acting_user=c.user)),
    "DOSE_IMPOSSIBLE": ({}, add("drugs.csv", "H001,1,1,8,顺铂,99999,mg,iv,antineoplastic"),
                        lambda c: clinical.drug_administration_record(
                            cycle=c.cycle, drug="顺铂", day=8, dose="99999", dose_unit="mg",
                            route="iv", acting_user=c.user)),
    "DOSE_IMPLAUSIBLE": ({}, add("drugs.csv", "H001,1,1,8,顺铂,8000,mg,iv,antineoplastic"),
                         lambda c: clinical.drug_administration_record(
                             cycle=c.cycle, drug="顺铂", day=15, dose="8000", dose_unit="mg",
                             route="iv", acting_user=c.user)),
    "AE_BEFORE_BIRTH": ({}, add("adverse_events.csv", "H001,恶心,1,1950-01-05,N,,"),
                        lambda c: clinical.adverse_event_record(
                            patient=c.patient, term="恶心", grade=1, onset_date=D(1950, 1, 5),
                            acting_user=c.user)),
    "AE_AFTER_DEATH": (DEAD, add("adverse_events.csv", "H001,恶心,1,2024-10-01,N,,"),
                       lambda c: clinical.adverse_event_record(
                           patient=c.patient, term="恶心", grade=1, onset_date=D(2024, 10, 1),
                           acting_user=c.user)),
    "AE_RESOLVED_BEFORE_ONSET": (
        {}, {"adverse_events.csv": AES_RESOLVED + "H001,恶心,1,2024-05-01,2024-04-01,N\n"},
        lambda c: clinical.adverse_event_record(
            patient=c.patient, term="恶心", grade=1, onset_date=D(2024, 5, 1),
            resolved_date=D(2024, 4, 1), acting_user=c.user)),
    "AE_GRADE_UNDEFINED": ({}, add("adverse_events.csv", "H001,恶心,4,2024-05-01,是,,"),
                           lambda c: clinical.adverse_event_record(
                               patient=c.patient, term="恶心", grade=4,
                               onset_date=D(2024, 5, 1), serious=True, acting_user=c.user)),
    "AE_SEVERE_NOT_SERIOUS": ({}, add("adverse_events.csv", "H001,呕吐,4,2024-05-01,N,,"),
                              lambda c: clinical.adverse_event_record(
                                  patient=c.patient, term="呕吐", grade=4,
                                  onset_date=D(2024, 5, 2), acting_user=c.user)),
    "LAB_COUNT_NEGATIVE": ({}, add("labs.csv", "H001,2024-05-01,ANC,-3,/mm3,,"),
                           lambda c: clinical.lab_result_record(
                               patient=c.patient, test="ANC", value="-3", unit="/mm3",
                               collected_date=D(2024, 5, 1), acting_user=c.user)),
    "LAB_FAR_ABOVE_RANGE": ({}, add("labs.csv", "H001,2024-05-01,ANC,100,10^9/L,,"),
                            lambda c: clinical.lab_result_record(
                                patient=c.patient, test="ANC", value="100", unit="10^9/L",
                                collected_date=D(2024, 5, 2), acting_user=c.user)),
    "LAB_FAR_BELOW_RANGE": ({}, add("labs.csv", "H001,2024-05-01,ANC,0.05,10^9/L,,"),
                            lambda c: clinical.lab_result_record(
                                patient=c.patient, test="ANC", value="0.05", unit="10^9/L",
                                collected_date=D(2024, 5, 2), acting_user=c.user)),
    "LAB_BEFORE_BIRTH": ({}, add("labs.csv", "H001,1950-01-05,ANC,3,10^9/L,,"),
                         lambda c: clinical.lab_result_record(
                             patient=c.patient, test="ANC", value="3", unit="10^9/L",
                             collected_date=D(1950, 1, 5), acting_user=c.user)),
    "FU_PROGRESSION_DATE_WITHOUT_PROGRESSION": (
        {}, {"followups.csv": FOLLOWUPS_FULL + "H001,2024-10-01,alive,N,2024-08-01,\n"},
        lambda c: clinical.followup_record(
            patient=c.patient, followup_date=D(2024, 10, 1), vital_status="alive",
            progression=False, progression_date=D(2024, 8, 1), acting_user=c.user)),
    "FU_PROGRESSION_AFTER_VISIT": (
        {}, {"followups.csv": FOLLOWUPS_FULL + "H001,2024-10-01,alive,Y,2024-11-01,\n"},
        lambda c: clinical.followup_record(
            patient=c.patient, followup_date=D(2024, 10, 1), vital_status="alive",
            progression=True, progression_date=D(2024, 11, 1), acting_user=c.user)),
    "FU_DEAD_WITHOUT_CAUSE": (
        {}, {"followups.csv": FOLLOWUPS_FULL + "H001,2024-10-01,dead,N,,\n"},
        lambda c: clinical.followup_record(
            patient=c.patient, followup_date=D(2024, 10, 1), vital_status="dead",
            progression=False, acting_user=c.user)),
    "FU_DEATH_BEFORE_EVENT": (
        {}, {"followups.csv": FOLLOWUPS_FULL + "H001,2024-04-01,dead,N,,disease\n"},
        lambda c: clinical.followup_record(
            patient=c.patient, followup_date=D(2024, 4, 1), vital_status="dead",
            cause_of_death="disease", acting_user=c.user)),
    "FU_AFTER_DEATH": (DEAD, {"followups.csv": DEAD["followups.csv"]
                              + "H001,2024-10-01,alive,N,\n"},
                       lambda c: clinical.followup_record(
                           patient=c.patient, followup_date=D(2024, 10, 1),
                           vital_status="alive", acting_user=c.user)),
    "FU_BEFORE_BIRTH": ({}, add("followups.csv", "H001,1950-01-05,alive,N"),
                        lambda c: clinical.followup_record(
                            patient=c.patient, followup_date=D(1950, 1, 5),
                            vital_status="alive", acting_user=c.user)),
}


def write(folder: Path, files: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def run(site, folder: Path, user):
    return extract_import(batch_create(site=site, path=folder, acting_user=user))


class _Undo(Exception):
    """Rolls back what a block wrote, so the next path starts from the same base."""


class _Context:
    def __init__(self, site, user) -> None:
        self.user = user
        self.patient = Patient.objects.get(site=site)
        self.line = TreatmentLine.objects.get(patient=self.patient, line_no=1)
        self.cycle = Cycle.objects.get(line=self.line, cycle_no=1)


def _automatic(rule: rules.Rule, message: str):
    return DataQuery.objects.filter(automatic=True, record_model=rule.kind, field=rule.field,
                                    text=message, status=DataQuery.Status.OPEN)


# -- every rule: its examples, and the same code and message on both paths ----------------------

@pytest.mark.parametrize("code", sorted(rules.RULES))
def test_each_rule_breaks_on_its_failing_example_and_keeps_its_passing_one(code):
    rule = rules.RULES[code]
    assert rule.fails and rule.passes, f"{code} declares no examples"
    frame = pd.DataFrame([rule.fails, rule.passes], index=["bad", "good"])
    violations, skipped = rules.evaluate(rule.kind, frame)
    assert code not in skipped
    assert list(violations.loc[violations["code"] == code, "row"]) == ["bad"]


@pytest.mark.parametrize("code", sorted(rules.RULES))
def test_each_rule_gives_the_same_code_and_message_on_the_form_and_the_import(
        tmp_path, site_a, alice, code):
    rule = rules.RULES[code]
    assert code in SCENARIOS, f"{code} has no form and import scenario in this test"
    base, change, form = SCENARIOS[code]
    base_files = dict(GOOD, **base)
    before = DataQuery.objects.count()

    # The import path, rolled back afterwards so the form path starts from the base alone.
    try:
        with transaction.atomic():
            batch = run(site_a, write(tmp_path / "bad", dict(base_files, **change)), alice)
            if rule.severity == rules.Severity.HARD:
                assert batch.status == ImportBatch.Status.FAILED, batch.errors
                found = [e for e in batch.errors if e["code"] == code]
                assert len(found) == 1, batch.errors
                assert found[0]["column"] == rule.field
                imported_message = found[0]["message"]
                assert Patient.objects.count() == 0  # nothing of a refused extract is written
            else:
                assert batch.status == ImportBatch.Status.IMPORTED, batch.errors
                queries = DataQuery.objects.filter(automatic=True, record_model=rule.kind,
                                                   field=rule.field)
                assert queries.count() == 1
                query = queries.get()
                imported_message = query.text
                assert query.opened_by == alice
                assert query.history.get().history_change_reason == f"import {batch.pk}"
            raise _Undo
    except _Undo:
        pass
    assert DataQuery.objects.count() == before

    batch = run(site_a, write(tmp_path / "base", base_files), alice)
    assert batch.status == ImportBatch.Status.IMPORTED, batch.errors
    context = _Context(site_a, alice)
    if rule.severity == rules.Severity.HARD:
        with pytest.raises(ValidationFailed) as refused:
            form(context)
        assert imported_message in refused.value.errors[rule.field]
    else:
        record = form(context)
        query = _automatic(rule, imported_message).get(record_id=record.pk)
        assert query.opened_by == alice


# -- the defects ------------------------------------------------------------------------------

def _base(site, user, tmp_path) -> _Context:
    assert run(site, write(tmp_path / "base", GOOD), user).status == ImportBatch.Status.IMPORTED
    return _Context(site, user)


def test_a_negative_neutrophil_count_is_refused_by_the_form_not_queried(tmp_path, site_a,
                                                                        alice):
    context = _base(site_a, alice, tmp_path)
    with pytest.raises(ValidationFailed) as refused:
        clinical.lab_result_record(patient=context.patient, test="ANC", value="-3",
                                   unit="/mm3", collected_date=D(2024, 5, 1),
                                   acting_user=alice)
    assert refused.value.errors["value"] == ["A lab value cannot be negative (-3)."]
    assert not LabResult.objects.filter(collected_date=D(2024, 5, 1)).exists()


def test_an_adverse_event_before_the_patients_birth_is_refused(tmp_path, site_a, alice):
    context = _base(site_a, alice, tmp_path)
    Patient.objects.filter(pk=context.patient.pk).update(birth_year=1968)
    context.patient.refresh_from_db()
    with pytest.raises(ValidationFailed, match="before the patient's birth year 1968"):
        clinical.adverse_event_record(patient=context.patient, term="恶心", grade=1,
                                      onset_date=D(1950, 1, 5), acting_user=alice)
    assert not AdverseEvent.objects.filter(onset_date=D(1950, 1, 5)).exists()


def test_a_dead_follow_up_with_a_progression_date_but_no_progression_is_refused(
        tmp_path, site_a, alice):
    context = _base(site_a, alice, tmp_path)
    with pytest.raises(ValidationFailed) as refused:
        clinical.followup_record(patient=context.patient, followup_date=D(2024, 10, 1),
                                 vital_status="dead", progression=False,
                                 progression_date=D(2024, 8, 1), acting_user=alice)
    assert "progression_date" in refused.value.errors
    assert not FollowUp.objects.filter(followup_date=D(2024, 10, 1)).exists()
    # Dead with no cause: accepted, and a query asks for the cause.
    followup = clinical.followup_record(patient=context.patient, followup_date=D(2024, 10, 1),
                                        vital_status="dead", acting_user=alice)
    assert DataQuery.objects.filter(record_model="followup", record_id=followup.pk,
                                    field="cause_of_death", automatic=True).count() == 1


def test_an_extract_breaking_the_order_of_events_is_refused_with_every_error(tmp_path, site_a,
                                                                             alice):
    files = dict(GOOD, **{
        "regimens.csv": GOOD["regimens.csv"] + "H001,2,PP,palliative,2024-01-01\n",
        "cycles.csv": CYCLES_BSA + "H001,1,3,2024-03-10,9.9\n",
        "drugs.csv": GOOD["drugs.csv"] + "H001,1,1,8,顺铂,99999,mg,iv,antineoplastic\n",
        "followups.csv": FOLLOWUPS_FULL + "H001,2024-03-20,dead,N,,disease\n"})
    batch = run(site_a, write(tmp_path / "x", files), alice)
    assert batch.status == ImportBatch.Status.FAILED
    codes = {e["code"] for e in batch.errors}
    assert {"LINE_BEFORE_DIAGNOSIS", "CYCLE_BEFORE_LINE", "CYCLE_BSA_IMPOSSIBLE",
            "DOSE_IMPOSSIBLE", "FU_DEATH_BEFORE_EVENT", "CYCLE_AFTER_DEATH"} <= codes
    assert Patient.objects.count() == 0
    assert DrugAdministration.objects.count() == 0


def test_cell_reference_and_rule_errors_are_reported_in_one_pass(tmp_path, site_a, alice):
    files = dict(GOOD, **{
        "labs.csv": GOOD["labs.csv"] + "H001,2024-05-01,ANC,abc,/mm3,,\n"
                                       "H001,2024-13-01,ANC,1,/mm3,,\n"
                                       "H999,2024-05-03,ANC,1,/mm3,,\n",
        "adverse_events.csv": GOOD["adverse_events.csv"] + "H001,恶心,9,2024-05-01,N,,\n"
                                                           "H001,恶心,4,2024-05-02,是,,\n",
        "diagnoses.csv": GOOD["diagnoses.csv"] + "H001,2024-06-01,肺癌,IVA,7\n",
        "cycles.csv": CYCLES_BSA + "H001,1,3,2024-04-26,9.9\n"})
    batch = run(site_a, write(tmp_path / "x", files), alice)
    assert batch.status == ImportBatch.Status.FAILED
    found = {(e["file"], e["row"], e["column"]) for e in batch.errors}
    assert found == {
        ("labs.csv", 4, "value"), ("labs.csv", 5, "collected_date"),  # cells
        ("adverse_events.csv", 4, "grade"), ("diagnoses.csv", 3, "ecog"),
        ("labs.csv", 6, "patient_no"),  # the orphan row: no such patient
        ("cycles.csv", 4, "bsa_m2"),  # a rule
        ("adverse_events.csv", 5, "grade"),  # a rule that needs the term's meaning
    }, batch.errors
    assert Patient.objects.count() == 0


def test_soft_rules_open_queries_on_imported_rows_in_one_insert_per_file(
        tmp_path, site_a, alice, monkeypatch):
    calls = []
    original = workflow.copy_frame_audited

    def counted(model, frame, **kwargs):
        calls.append((model, len(frame)))
        return original(model, frame, **kwargs)

    monkeypatch.setattr(workflow, "copy_frame_audited", counted)
    files = dict(GOOD, **{
        "drugs.csv": GOOD["drugs.csv"] + "H001,1,1,8,顺铂,8000,mg,iv,antineoplastic\n"
                                         "H001,1,2,8,顺铂,7000,mg,iv,antineoplastic\n",
        "labs.csv": GOOD["labs.csv"] + "H001,2024-05-01,ANC,100,10^9/L,,\n"})
    batch = run(site_a, write(tmp_path / "x", files), alice)
    assert batch.status == ImportBatch.Status.IMPORTED, batch.errors
    assert sorted((m.__name__, n) for m, n in calls) == [("DataQuery", 1), ("DataQuery", 2)]
    assert DataQuery.objects.filter(record_model="drugadministration", field="dose").count() == 2
    assert batch.counts["queries"]["created"] == 3
    # The same extract again opens no second query on the same fields.
    again = run(site_a, write(tmp_path / "x", files), alice)
    assert again.status == ImportBatch.Status.IMPORTED
    assert DataQuery.objects.filter(automatic=True, record_model__in=[
        "drugadministration", "labresult"]).count() == 3


@pytest.mark.django_db(transaction=True)
def test_an_import_opens_its_queries_outside_a_test_transaction(tmp_path, vocabulary, site_a,
                                                                alice):
    files = dict(GOOD, **{"cycles.csv": CYCLES_BSA + "H001,1,3,2024-04-26,3.2\n"})
    batch = run(site_a, write(tmp_path / "x", files), alice)
    assert batch.status == ImportBatch.Status.IMPORTED, batch.errors
    cycle = Cycle.objects.get(cycle_no=3)
    query = DataQuery.objects.get(record_model="cycle", record_id=cycle.pk)
    assert (query.field, query.patient_id, query.site_id) == ("bsa_m2", cycle.patient_id,
                                                              site_a.pk)
    assert query.history.count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_form_refuses_a_hard_rule_outside_a_test_transaction(tmp_path, vocabulary, site_a,
                                                               alice):
    context = _base(site_a, alice, tmp_path)
    with pytest.raises(ValidationFailed):
        clinical.cycle_record(line=context.line, cycle_no=3, start_date=D(2024, 3, 10),
                              acting_user=alice)
    assert Cycle.objects.filter(cycle_no=3).count() == 0


@pytest.mark.parametrize(("value", "comparator", "grade"), [
    (0.5, "<", 4), (0.5, "", 3), (0.5, "<=", 3), (1.0, "<", 3), (0.3, "", 4)])
def test_censored_neutrophil_counts_are_graded_by_what_they_say(value, comparator, grade):
    lab = Concept.objects.get(vocabulary__code="LOINC", code="751-8")
    assert propose_grade(lab, value, comparator) == ("Neutrophil count decreased", grade)


@pytest.mark.parametrize("spelling", ["zy2026-0042", "ZY2026 0042", "ＺＹ２０２６－００４２",
                                      " ZY-2026-0042 "])
def test_one_hospital_number_however_written_is_one_patient(site_a, alice, spelling):
    clinical.patient_register(site=site_a, patient_no="ZY2026-0042", sex="M", birth_year=1968,
                              acting_user=alice)
    with pytest.raises(ValidationFailed, match="already registered"):
        clinical.patient_register(site=site_a, patient_no=spelling, sex="M", birth_year=1968,
                                  acting_user=alice)
    assert Patient.objects.count() == 1


def test_a_patient_stored_under_the_legacy_hash_still_matches(tmp_path, site_a, alice):
    patient = clinical.patient_register(site=site_a, patient_no="H001", sex="F",
                                        birth_year=1960, acting_user=alice)
    legacy = hospital_number_hash_legacy(site_a.code, "h-001")
    Patient.objects.filter(pk=patient.pk).update(hospital_number_hash=legacy)
    with pytest.raises(ValidationFailed, match="already registered"):
        clinical.patient_register(site=site_a, patient_no="h-001", sex="F", birth_year=1960,
                                  acting_user=alice)
    files = {name: text.replace("H001", "h-001") for name, text in GOOD.items()}
    batch = run(site_a, write(tmp_path / "x", files), alice)
    assert batch.status == ImportBatch.Status.IMPORTED, batch.errors
    assert Patient.objects.count() == 1
    assert Patient.objects.get().hospital_number_hash == legacy
    assert Cycle.objects.filter(patient=patient).count() == 2


def test_an_extract_matches_a_patient_however_the_number_is_written(tmp_path, site_a, alice):
    clinical.patient_register(site=site_a, patient_no="ZY2026-0042", sex="F", birth_year=1960,
                              acting_user=alice)
    files = {name: text.replace("H001", "zy2026 0042") for name, text in GOOD.items()}
    batch = run(site_a, write(tmp_path / "x", files), alice)
    assert batch.status == ImportBatch.Status.IMPORTED, batch.errors
    assert Patient.objects.count() == 1
    assert Patient.objects.get().hospital_number_hash == hospital_number_hash(site_a.code,
                                                                              "ZY20260042")
    # One file naming one number two ways is refused, with the row it repeats.
    twice = dict(files, **{"patients.csv": files["patients.csv"]
                           + "ZY2026-0042,F,1960,肿瘤内科,academic\n"})
    batch = run(site_a, write(tmp_path / "y", twice), alice)
    assert batch.status == ImportBatch.Status.FAILED
    assert any("same hospital number as row 2" in e["message"] for e in batch.errors)


def test_the_demo_extracts_import_with_no_hard_errors(tmp_path, ada):
    call_command("seed_demo", "--patients", "80", "--sites", "2", "--seed", "3",
                 "--as-extracts", str(tmp_path / "out"))
    for spec in g.plan_sites(n_sites=2, n_patients=80, seed=3):
        cohort = g.generate_site(spec)
        site, _ = site_upsert(code=spec.code, name=spec.name, acting_user=None)
        mapping = tmp_path / f"{spec.code}.csv"
        cohort.terms[["domain", "text", "vocabulary", "code"]].rename(
            columns={"text": "local_term"}).to_csv(mapping, index=False)
        mappings_import(site=site, path=mapping, acting_user=ada)
        batch = run(site, tmp_path / "out" / spec.code, ada)
        assert batch.status == ImportBatch.Status.IMPORTED, [
            (e["code"], e["message"]) for e in batch.errors[:5]]
        assert Patient.objects.filter(site=site).count() == cohort.row_counts()["patients"]
