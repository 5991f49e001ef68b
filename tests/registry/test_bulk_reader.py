"""The bulk reader: every kind equals the ORM, site scoping, snapshots from the history tables,
context columns and the cohort view."""

from __future__ import annotations

import datetime as dt
import json
import time
from decimal import Decimal

import pandas as pd
import pytest
from django.utils import timezone

from registry.audit import audited_delete, audited_save
from registry.models import (
    AdverseEvent,
    Cycle,
    Diagnosis,
    DrugAdministration,
    FollowUp,
    LabResult,
    TreatmentLine,
)
from registry.rules import allowed_grades_text
from registry.selectors.bulk import (
    ALL_SITES,
    CONTEXT_COLUMNS,
    KIND_MODELS,
    UnknownKind,
    cohort_frame,
    model_columns,
    records_frame,
)
from registry.services import clinical
from tests.registry import factories

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("vocabulary")]


def _plain(value):
    """A cell of either source as a comparable Python value."""
    if value is None or (not isinstance(value, dict | list | str) and pd.isna(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime() if value.tzinfo else value.date()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, str) and value.startswith(("{", "[")):
        return json.dumps(json.loads(value), sort_keys=True)
    if hasattr(value, "item"):
        return value.item()
    return value


def _orm_rows(model, ids=None):
    columns = list(model_columns(model))
    queryset = model.objects.order_by("id")
    if ids is not None:
        queryset = queryset.filter(site_id__in=ids)
    return [{c: _plain(r[c]) for c in columns} for r in queryset.values(*columns)]


def _frame_rows(frame, model):
    columns = list(model_columns(model))
    return [{c: _plain(r[c]) for c in columns} for r in frame[columns].to_dict("records")]


@pytest.fixture
def cohort(site_a, site_b, alice, bob):
    a = [factories.full_record(site_a, alice) for _ in range(2)]
    b = [factories.full_record(site_b, bob)]
    return a, b


@pytest.mark.parametrize("kind", list(KIND_MODELS))
def test_every_kind_equals_the_orm(kind, cohort):
    model = KIND_MODELS[kind]
    frame = records_frame(kind, sites=ALL_SITES)
    assert len(frame) == model.objects.count() > 0
    assert _frame_rows(frame, model) == _orm_rows(model)
    assert list(frame.columns) == [*model_columns(model), *CONTEXT_COLUMNS[kind]]


@pytest.mark.parametrize("kind", list(KIND_MODELS))
def test_a_site_b_user_never_gets_site_a_rows(kind, cohort, bob, mona, site_a, site_b, ada):
    model = KIND_MODELS[kind]
    frame = records_frame(kind, user=bob)
    assert set(frame["site_id"]) == {site_b.pk}
    assert _frame_rows(frame, model) == _orm_rows(model, [site_b.pk])
    assert set(records_frame(kind, user=mona)["site_id"]) == {site_a.pk}
    # An explicit list narrows a user's scope, never widens it.
    assert records_frame(kind, user=bob, sites=[site_a.pk]).empty
    assert len(records_frame(kind, user=ada)) == model.objects.count()


def test_scope_is_never_implied(cohort):
    with pytest.raises(ValueError, match="sites"):
        records_frame("patient")
    with pytest.raises(ValueError, match="sites"):
        cohort_frame()


def test_unknown_kind_and_column_are_named(cohort):
    with pytest.raises(UnknownKind, match="nosuchkind"):
        records_frame("nosuchkind", sites=ALL_SITES)
    with pytest.raises(ValueError, match="nosuchcolumn"):
        records_frame("cycle", sites=ALL_SITES, columns=["start_date", "nosuchcolumn"])


def test_chosen_columns_keep_id_and_site(cohort):
    frame = records_frame("cycle", sites=ALL_SITES, columns=["bsa_m2", "ctx_line_start_date"])
    assert list(frame.columns) == ["id", "site_id", "bsa_m2", "ctx_line_start_date"]


def test_context_columns(cohort, site_a, alice):
    patient = cohort[0][0]
    diagnosis = Diagnosis.objects.get(patient=patient)
    line = TreatmentLine.objects.get(patient=patient)
    cycle = Cycle.objects.get(patient=patient)
    drug = DrugAdministration.objects.get(patient=patient)
    followup = FollowUp.objects.get(patient=patient)
    audited_save(_with(followup, vital_status="dead", cause_of_death="x"), acting_user=None,
                 reason="test")

    cycles = records_frame("cycle", sites=[site_a.pk]).set_index("id")
    assert cycles.loc[cycle.pk, "ctx_line_start_date"].date() == line.start_date
    assert cycles.loc[cycle.pk, "ctx_birth_year"] == patient.birth_year
    assert cycles.loc[cycle.pk, "ctx_first_diagnosis_date"].date() == diagnosis.diagnosis_date
    assert cycles.loc[cycle.pk, "ctx_death_date"].date() == followup.followup_date
    drugs = records_frame("drugadministration", sites=[site_a.pk]).set_index("id")
    assert drugs.loc[drug.pk, "ctx_cycle_start_date"].date() == cycle.start_date
    assert drugs.loc[drug.pk, "ctx_line_start_date"].date() == line.start_date
    other = cohort[0][1]
    assert pd.isna(drugs.loc[DrugAdministration.objects.get(patient=other).pk,
                             "ctx_death_date"])
    # The meanings of the words, joined from the concepts: a term's grades and name, a lab's
    # reference range; an unmapped word has none.
    event = AdverseEvent.objects.get(patient=patient)
    unmapped = clinical.adverse_event_record(patient=patient, term="a word nobody mapped",
                                             grade=2, onset_date=cycle.start_date,
                                             acting_user=alice)
    events = records_frame("adverseevent", sites=[site_a.pk]).set_index("id")
    assert events.loc[event.pk, "ctx_allowed_grades"] == allowed_grades_text(
        event.ae.allowed_grades()) == "1, 2, 3"
    assert events.loc[event.pk, "ctx_term"] == event.ae.name_en == "Nausea"
    assert events.loc[unmapped.pk, "ctx_allowed_grades"] is None
    assert events.loc[unmapped.pk, "ctx_term"] == unmapped.ae_term.text
    lab = LabResult.objects.get(patient=patient)
    labs = records_frame("labresult", sites=[site_a.pk]).set_index("id")
    assert labs.loc[lab.pk, "ctx_reference_low"] == lab.lab.attributes["reference_low"] == 1.8
    assert labs.loc[lab.pk, "ctx_reference_high"] == lab.lab.attributes["reference_high"]
    # The last diagnosis or cycle: the cycle, after the diagnosis.
    followups = records_frame("followup", sites=[site_a.pk]).set_index("id")
    assert followups.loc[followup.pk, "ctx_last_event_date"].date() == cycle.start_date
    # The same context from a snapshot taken now (through the history tables).
    now = timezone.now()
    for kind in ("adverseevent", "labresult", "followup"):
        current = records_frame(kind, sites=[site_a.pk])
        pd.testing.assert_frame_equal(
            records_frame(kind, sites=[site_a.pk], as_of=now)[list(CONTEXT_COLUMNS[kind])],
            current[list(CONTEXT_COLUMNS[kind])])


def _with(obj, **values):
    for name, value in values.items():
        setattr(obj, name, value)
    return obj


def _tick() -> dt.datetime:
    """A snapshot time strictly between two writes."""
    time.sleep(0.01)
    moment = timezone.now()
    time.sleep(0.01)
    return moment


@pytest.mark.django_db(transaction=True)
def test_as_of_sees_the_rows_as_they_stood(vocabulary, site_a, alice):
    patient = factories.full_record(site_a, alice)
    diagnosis = Diagnosis.objects.get(patient=patient)
    followup = FollowUp.objects.get(patient=patient)
    snapshot = _tick()

    clinical.diagnosis_record(patient=patient, diagnosis_date=diagnosis.diagnosis_date,
                              cancer="C34", stage_group="IIIB", ecog=2, instance=diagnosis,
                              expected_version=diagnosis.version, change_reason="restaged",
                              acting_user=alice)
    followup_id = followup.pk
    audited_delete(followup, acting_user=alice, reason="entered twice")
    late = factories.patient(site_a, alice)

    now = records_frame("diagnosis", sites=[site_a.pk]).set_index("id")
    assert now.loc[diagnosis.pk, "stage_group"] == "IIIB"
    then = records_frame("diagnosis", sites=[site_a.pk], as_of=snapshot).set_index("id")
    assert then.loc[diagnosis.pk, "stage_group"] == "IV"  # the edit after it is not seen
    assert then.loc[diagnosis.pk, "ecog"] == 1
    assert records_frame("followup", sites=[site_a.pk]).empty
    gone = records_frame("followup", sites=[site_a.pk], as_of=snapshot)
    assert list(gone["id"]) == [followup_id]  # the delete after it is not seen
    patients = records_frame("patient", sites=[site_a.pk], as_of=snapshot)
    assert list(patients["id"]) == [patient.pk]  # created after it: absent
    assert late.pk in set(records_frame("patient", sites=[site_a.pk])["id"])
    # Context comes from the same snapshot: the follow-up deleted since still counts.
    cohort_then = cohort_frame(sites=[site_a.pk], as_of=snapshot)
    assert list(cohort_then["followup_count"]) == [1]
    assert list(cohort_then["stage_group"]) == ["IV"]
    cohort_now = cohort_frame(sites=[site_a.pk]).set_index("patient_id")
    assert cohort_now.loc[patient.pk, "followup_count"] == 0
    assert cohort_now.loc[late.pk, "diagnosis_count"] == 0
    # Before anything existed: an empty frame with the same columns.
    empty = records_frame("diagnosis", sites=[site_a.pk],
                          as_of=snapshot - dt.timedelta(days=1))
    assert empty.empty and list(empty.columns) == list(then.reset_index().columns)


def test_cohort_frame_equals_orm_summaries(cohort, site_a, site_b, alice, bob):
    patient = cohort[0][0]
    diagnosis = Diagnosis.objects.get(patient=patient)
    clinical.diagnosis_record(patient=patient, diagnosis_date=diagnosis.diagnosis_date
                              + dt.timedelta(days=20), cancer="C50", stage_group="I",
                              acting_user=alice)
    followup = FollowUp.objects.get(patient=patient)
    clinical.followup_record(patient=patient, followup_date=followup.followup_date
                             + dt.timedelta(days=30), vital_status="dead",
                             cause_of_death="cancer", acting_user=alice)
    frame = cohort_frame(sites=ALL_SITES).set_index("patient_id")
    assert len(frame) == 3
    row = frame.loc[patient.pk]
    assert row["first_diagnosis_id"] == diagnosis.pk
    assert row["stage_group"] == diagnosis.stage_group
    assert row["diagnosis_count"] == 2
    assert row["followup_count"] == 2
    assert row["last_vital_status"] == "dead"
    assert row["death_date"].date() == followup.followup_date + dt.timedelta(days=30)
    assert row["last_followup_date"] == row["death_date"]
    assert row["line_count"] == 1
    assert set(cohort_frame(user=bob)["site_id"]) == {site_b.pk}


@pytest.mark.parametrize("kind", list(KIND_MODELS))
def test_patients_narrow_the_rows_and_keep_their_context(kind, cohort, site_a):
    """One patient's records (a form's recheck) are the whole read's rows of that patient,
    context included, now and at a snapshot."""
    patient = cohort[0][1]
    key = "id" if kind == "patient" else "patient_id"
    moment = timezone.now()
    for as_of in (None, moment):
        whole = records_frame(kind, sites=ALL_SITES, as_of=as_of)
        narrowed = records_frame(kind, sites=[site_a.pk], patients=[patient.pk], as_of=as_of)
        expected = whole[whole[key] == patient.pk].reset_index(drop=True)
        assert len(expected) > 0
        pd.testing.assert_frame_equal(narrowed, expected)


@pytest.mark.django_db
@pytest.mark.parametrize("chunk_bytes", [1, 200, 1 << 20])
def test_chunks_joined_equal_the_frame_even_with_newlines_and_quotes(site_a, alice, chunk_bytes):
    from registry.selectors.bulk import records_chunks

    for n, cause in enumerate(['line one\nline "two"', 'a,"b"\r\nc', "plain", ""]):
        p = factories.patient(site_a, alice)
        clinical.diagnosis_record(patient=p, diagnosis_date=dt.date(2020, 1, 1), cancer="C34",
                                  acting_user=alice)
        clinical.followup_record(patient=p, followup_date=dt.date(2020, 2, 1 + n),
                                 vital_status="dead", cause_of_death=cause, acting_user=alice)
    whole = records_frame("followup", sites=ALL_SITES)
    chunks = list(records_chunks("followup", sites=ALL_SITES, chunk_bytes=chunk_bytes))
    assert len(chunks) >= (2 if chunk_bytes == 1 else 1)
    joined = pd.concat(chunks, ignore_index=True)
    pd.testing.assert_frame_equal(joined, whole)
    assert set(whole["cause_of_death"]) >= {'line one\nline "two"', 'a,"b"\r\nc'}


@pytest.mark.django_db
def test_chunks_of_nothing_are_one_empty_frame_with_the_columns(site_a):
    from registry.selectors.bulk import records_chunks

    chunks = list(records_chunks("labresult", sites=[site_a.pk], columns=["id", "value"]))
    assert len(chunks) == 1 and chunks[0].empty
    assert list(chunks[0].columns) == ["id", "site_id", "value"]
