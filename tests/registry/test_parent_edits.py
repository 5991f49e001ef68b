"""Editing a parent re-runs the rules of the records that read the changed fact: a birth year
moved after an event, a diagnosis or a line moved after the treatment that follows it, a death
recorded before an event. Hard rules refuse the edit naming the record; soft ones open data
queries on the records, in one insert."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import pytest
from django.utils.translation import gettext_lazy as _

from registry import rules
from registry.errors import ValidationFailed
from registry.models import (
    AdverseEvent,
    Cycle,
    DataQuery,
    Diagnosis,
    FollowUp,
    LabResult,
    Patient,
    TreatmentLine,
)
from registry.services import clinical
from tests.registry import factories

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("vocabulary")]

D = factories.DIAGNOSED  # 2024-03-05; full_record's line and cycle start ten days later


def _day(days: int) -> dt.date:
    return D + dt.timedelta(days=days)


# -- the parent edits ---------------------------------------------------------------------------

def birth_year_edit(patient: Patient, user, year: int):
    return clinical.patient_update(
        patient=patient, sex=patient.sex, birth_year=year, department=patient.department,
        consent_scope=patient.consent_scope, consent_date=patient.consent_date,
        expected_version=patient.version, change_reason="birth year corrected",
        acting_user=user)


def diagnosis_edit(diagnosis: Diagnosis, user, day: dt.date):
    return clinical.diagnosis_record(
        patient=diagnosis.patient, diagnosis_date=day, cancer=diagnosis.cancer_term.text,
        stage_group=diagnosis.stage_group, ecog=diagnosis.ecog, instance=diagnosis,
        expected_version=diagnosis.version, change_reason="date corrected", acting_user=user)


def line_edit(line: TreatmentLine, user, day: dt.date):
    return clinical.treatment_line_record(
        patient=line.patient, line_no=line.line_no, start_date=day,
        regimen=line.regimen_term.text if line.regimen_term else "", instance=line,
        expected_version=line.version, change_reason="date corrected", acting_user=user)


def cycle_edit(cycle: Cycle, user, day: dt.date):
    return clinical.cycle_record(
        line=cycle.line, cycle_no=cycle.cycle_no, start_date=day,
        length_days=cycle.length_days, bsa_m2=cycle.bsa_m2, instance=cycle,
        expected_version=cycle.version, change_reason="date corrected", acting_user=user)


def death_record(patient: Patient, user, day: dt.date):
    return clinical.followup_record(patient=patient, followup_date=day, vital_status="dead",
                                    cause_of_death="disease progression", acting_user=user)


def death_edit(followup: FollowUp, user, day: dt.date):
    return clinical.followup_record(
        patient=followup.patient, followup_date=day, vital_status="dead",
        cause_of_death="disease progression", instance=followup,
        expected_version=followup.version, change_reason="died", acting_user=user)


@dataclass
class Case:
    parent: object  # the record edited
    edit: Callable[[], object]
    field: str  # the parent's field the refusal is shown at
    child: object  # the record that breaks the rule after the edit
    code: str  # the rule it breaks


def _young_patient(site, user, child: str) -> Case:
    """Born in 1960 with one record in 2001; the birth year is moved to 2005."""
    patient = factories.patient(site, user, birth_year=1960)
    day = dt.date(2001, 5, 1)
    record, code = {
        "diagnosis": lambda: (clinical.diagnosis_record(
            patient=patient, diagnosis_date=day, cancer="C34", acting_user=user),
            "DIAGNOSIS_BEFORE_BIRTH"),
        "adverseevent": lambda: (clinical.adverse_event_record(
            patient=patient, term="Nausea", grade=1, onset_date=day, acting_user=user),
            "AE_BEFORE_BIRTH"),
        "labresult": lambda: (clinical.lab_result_record(
            patient=patient, test="ANC", value="2.0", unit="10^9/L", collected_date=day,
            acting_user=user), "LAB_BEFORE_BIRTH"),
        "followup": lambda: (clinical.followup_record(
            patient=patient, followup_date=day, vital_status="alive", acting_user=user),
            "FU_BEFORE_BIRTH"),
    }[child]()
    return Case(patient, lambda: birth_year_edit(patient, user, 2005), "birth_year", record,
                code)


def _diagnosis_after(site, user, child: str) -> Case:
    patient = factories.full_record(site, user)
    diagnosis = Diagnosis.objects.get(patient=patient)
    record = {"treatmentline": TreatmentLine, "cycle": Cycle}[child].objects.get(
        patient=patient)
    code = {"treatmentline": "LINE_BEFORE_DIAGNOSIS", "cycle": "CYCLE_BEFORE_DIAGNOSIS"}[child]
    return Case(diagnosis, lambda: diagnosis_edit(diagnosis, user, _day(20)),
                "diagnosis_date", record, code)


def _line_after_its_cycle(site, user) -> Case:
    patient = factories.full_record(site, user)
    line = TreatmentLine.objects.get(patient=patient)
    cycle = Cycle.objects.get(patient=patient)
    return Case(line, lambda: line_edit(line, user, cycle.start_date + dt.timedelta(days=3)),
                "start_date", cycle, "CYCLE_BEFORE_LINE")


def _death_before(site, user, child: str, *, by_edit: bool = False) -> Case:
    """Diagnosed on D, then a record dated D+60; death recorded on D+30."""
    patient = factories.patient(site, user)
    clinical.diagnosis_record(patient=patient, diagnosis_date=D, cancer="C34",
                              acting_user=user)
    later = _day(60)
    record, code = {
        "adverseevent": lambda: (clinical.adverse_event_record(
            patient=patient, term="Nausea", grade=1, onset_date=later, acting_user=user),
            "AE_AFTER_DEATH"),
        "followup": lambda: (clinical.followup_record(
            patient=patient, followup_date=later, vital_status="alive", acting_user=user),
            "FU_AFTER_DEATH"),
        "treatmentline": lambda: (clinical.treatment_line_record(
            patient=patient, line_no=1, start_date=later, acting_user=user),
            "LINE_AFTER_DEATH"),
    }[child]()
    if by_edit:  # an alive visit on D+30 corrected to death
        visit = clinical.followup_record(patient=patient, followup_date=_day(30),
                                         vital_status="alive", acting_user=user)
        return Case(visit, lambda: death_edit(visit, user, _day(30)), "followup_date", record,
                    code)
    return Case(patient, lambda: death_record(patient, user, _day(30)), "followup_date",
                record, code)


HARD_CASES: dict[str, Callable] = {
    "birth_year-diagnosis": lambda s, u: _young_patient(s, u, "diagnosis"),
    "birth_year-adverseevent": lambda s, u: _young_patient(s, u, "adverseevent"),
    "birth_year-labresult": lambda s, u: _young_patient(s, u, "labresult"),
    "birth_year-followup": lambda s, u: _young_patient(s, u, "followup"),
    "diagnosis_date-treatmentline": lambda s, u: _diagnosis_after(s, u, "treatmentline"),
    "diagnosis_date-cycle": lambda s, u: _diagnosis_after(s, u, "cycle"),
    "line_start-cycle": _line_after_its_cycle,
    "death-adverseevent": lambda s, u: _death_before(s, u, "adverseevent"),
    "death-followup": lambda s, u: _death_before(s, u, "followup"),
    "death-treatmentline": lambda s, u: _death_before(s, u, "treatmentline"),
    "death_by_edit-adverseevent": lambda s, u: _death_before(s, u, "adverseevent",
                                                             by_edit=True),
}


def _state(case: Case) -> dict:
    """What the refused edit must leave as it was."""
    parent = type(case.parent).objects.filter(pk=case.parent.pk).values().first()
    return {"parent": parent, "parent_history": type(case.parent).history.count(),
            "followups": list(FollowUp.objects.filter(patient_id=case.child.patient_id)
                              .order_by("pk").values()),
            "queries": DataQuery.objects.count()}


def _assert_refused(case: Case) -> None:
    before = _state(case)
    with pytest.raises(ValidationFailed) as refused:
        case.edit()
    messages = refused.value.errors[case.field]
    label = clinical._record_label(case.child._meta.model_name, case.child.pk)
    rule = rules.RULES[case.code]
    assert rule.kind == case.child._meta.model_name
    expected_start = f"{label}: {str(rule.message).split('%')[0]}"
    assert any(m.startswith(expected_start) for m in messages), messages
    assert _state(case) == before


@pytest.mark.parametrize("case", sorted(HARD_CASES))
def test_a_parent_edit_breaking_a_hard_rule_of_a_record_is_refused(case, site_a, alice):
    _assert_refused(HARD_CASES[case](site_a, alice))


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("case", ["line_start-cycle", "death-adverseevent"])
def test_a_refused_parent_edit_commits_nothing(vocabulary, case, site_a, alice):
    built = HARD_CASES[case](site_a, alice)
    _assert_refused(built)
    # The parent's other records were not touched either, and a later valid edit still goes.
    assert type(built.child).objects.filter(pk=built.child.pk).exists()


def test_the_message_names_the_record_and_keeps_the_rules_words(site_a, alice):
    case = _line_after_its_cycle(site_a, alice)
    with pytest.raises(ValidationFailed) as refused:
        case.edit()
    cycle = case.child
    assert refused.value.errors["start_date"] == [
        f"Cycle {cycle.pk}: The cycle starts on {cycle.start_date.isoformat()}, before its "
        f"line on {(cycle.start_date + dt.timedelta(days=3)).isoformat()}."]


def test_only_what_the_edit_breaks_is_judged(site_a, alice):
    """A stored record that broke a rule before the edit (entered before the rule) blocks
    neither an edit of its parent that moves no fact nor one that moves it; a record the edit
    breaks is refused, and only it is named."""
    patient = factories.full_record(site_a, alice)
    legacy = Cycle.objects.get(patient=patient)
    Cycle.objects.filter(pk=legacy.pk).update(start_date=_day(1))  # before its line on D+10
    line = TreatmentLine.objects.get(patient=patient)
    edited = clinical.treatment_line_record(
        patient=patient, line_no=1, start_date=line.start_date, regimen="PP", intent="palliative",
        instance=line, expected_version=line.version, change_reason="intent", acting_user=alice)
    assert TreatmentLine.objects.get(pk=line.pk).intent == edited.intent == "palliative"
    edited = line_edit(edited, alice, _day(12))
    assert TreatmentLine.objects.get(pk=line.pk).start_date == _day(12)
    second = clinical.cycle_record(line=edited, cycle_no=2, start_date=_day(14),
                                   acting_user=alice)
    with pytest.raises(ValidationFailed) as refused:
        line_edit(TreatmentLine.objects.get(pk=line.pk), alice, _day(16))
    assert [m.split(":")[0] for m in refused.value.errors["start_date"]] == [
        f"Cycle {second.pk}"]
    assert TreatmentLine.objects.get(pk=line.pk).start_date == _day(12)
    # A later second diagnosis moves no first diagnosis date: the legacy cycle does not block it.
    Cycle.objects.filter(pk=legacy.pk).update(start_date=D - dt.timedelta(days=1))
    clinical.diagnosis_record(patient=patient, diagnosis_date=_day(2), cancer="C50",
                              acting_user=alice)
    assert Diagnosis.objects.filter(patient=patient).count() == 2


def test_a_valid_parent_edit_is_saved(site_a, alice):
    patient = factories.full_record(site_a, alice)
    line = TreatmentLine.objects.get(patient=patient)
    edited = line_edit(line, alice, _day(8))
    assert TreatmentLine.objects.get(pk=line.pk).start_date == _day(8) == edited.start_date
    assert TreatmentLine.objects.get(pk=line.pk).version == line.version + 1


# -- soft rules: the parent edit is saved and the records get data queries ----------------------
# No soft rule of the rulebook reads a parent's fact yet, so each case installs one for the test
# (broken where the fact has the value the edit gives it), to show the path the rulebook's next
# one takes.

SOFT_TEXT = "checked against the changed fact"


def _soft_rule(context: str, kind: str, field: str, value) -> rules.Rule:
    return rules.Rule(code=f"TEST_SOFT_{context.upper()}", kind=kind, field=field,
                      severity=rules.Severity.SOFT, message=_(SOFT_TEXT), columns=(context,),
                      check=lambda frame: frame[context] == value)


def _soft_case(name: str, site, user):
    """(edit, context column, the value the edit gives it, the records expected to get a
    query)."""
    patient = factories.full_record(site, user)
    if name == "birth_year":
        edit = lambda: birth_year_edit(patient, user, 1961)  # noqa: E731
        return edit, "ctx_birth_year", 1961, list(LabResult.objects.filter(patient=patient))
    if name == "diagnosis_date":
        diagnosis = Diagnosis.objects.get(patient=patient)
        edit = lambda: diagnosis_edit(diagnosis, user, _day(-2))  # noqa: E731
        return (edit, "ctx_first_diagnosis_date", _day(-2),
                list(Cycle.objects.filter(patient=patient)))
    if name == "line_start":
        line = TreatmentLine.objects.get(patient=patient)
        edit = lambda: line_edit(line, user, _day(9))  # noqa: E731
        return edit, "ctx_line_start_date", _day(9), list(Cycle.objects.filter(patient=patient))
    if name == "cycle_start":
        cycle = Cycle.objects.get(patient=patient)
        edit = lambda: cycle_edit(cycle, user, _day(11))  # noqa: E731
        return (edit, "ctx_cycle_start_date", _day(11),
                list(AdverseEvent.objects.filter(patient=patient)))
    assert name == "death"
    edit = lambda: death_record(patient, user, _day(90))  # noqa: E731
    return edit, "ctx_death_date", _day(90), list(LabResult.objects.filter(patient=patient))


@pytest.mark.parametrize("name", ["birth_year", "diagnosis_date", "line_start", "cycle_start",
                                  "death"])
def test_a_parent_edit_breaking_a_soft_rule_opens_queries_on_the_records(
        name, site_a, alice, monkeypatch):
    edit, context, value, records = _soft_case(name, site_a, alice)
    assert records
    kind = records[0]._meta.model_name
    field = {"labresult": "value", "cycle": "start_date", "adverseevent": "grade"}[kind]
    if isinstance(value, dt.date):
        value = pd.Timestamp(value)
    rule = _soft_rule(context, kind, field, value)
    monkeypatch.setitem(rules.RULES, rule.code, rule)
    history_before = DataQuery.history.count()

    edited = edit()

    assert type(edited).objects.get(pk=edited.pk).version == edited.version  # saved
    opened = DataQuery.objects.filter(text=SOFT_TEXT)
    assert sorted(opened.values_list("record_model", "record_id", "field", "automatic",
                                     "status", "opened_by")) == sorted(
        (kind, r.pk, field, True, DataQuery.Status.OPEN, alice.pk) for r in records)
    assert DataQuery.history.count() == history_before + len(records)


def test_soft_queries_are_not_opened_twice(site_a, alice, monkeypatch):
    patient = factories.full_record(site_a, alice)
    rule = _soft_rule("ctx_birth_year", "labresult", "value", 1961)
    monkeypatch.setitem(rules.RULES, rule.code, rule)
    for year in (1961, 1960, 1961):  # broken, mended, broken again while the query is open
        birth_year_edit(Patient.objects.get(pk=patient.pk), alice, year)
    assert Patient.objects.get(pk=patient.pk).birth_year == 1961
    assert DataQuery.objects.filter(text=SOFT_TEXT).count() == LabResult.objects.filter(
        patient=patient).count() == 1
