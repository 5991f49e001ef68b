"""The workflow: submit, query, answer, verify and lock with a password, unlock with a reason;
no lost updates; reasons after submission; edit checks that open queries."""

import datetime as dt

import pytest

from registry.errors import NotPermitted, StaleEdit, ValidationFailed
from registry.models import AdverseEvent, DataQuery, RecordStatus
from registry.services import clinical, workflow
from tests.conftest import persona_password
from tests.registry import factories

pytestmark = pytest.mark.usefixtures("vocabulary")


@pytest.fixture
def ae(site_a, alice):
    patient = factories.full_record(site_a, alice)
    return AdverseEvent.objects.get(patient=patient)


def _edit_ae(ae, user, *, grade, version, reason=""):
    return clinical.adverse_event_record(
        patient=ae.patient, term=ae.ae_term.text, grade=grade, onset_date=ae.onset_date,
        cycle=ae.cycle, serious=ae.serious, instance=ae, expected_version=version,
        change_reason=reason, acting_user=user)


def test_full_workflow_with_e_signatures(ae, alice, mona):
    ae = workflow.record_submit(ae, acting_user=alice)
    assert ae.status == RecordStatus.SUBMITTED
    query = workflow.query_open(ae, field="grade", text="Grade 2 or 3? Check the notes.",
                                acting_user=mona)
    with pytest.raises(ValidationFailed, match="open queries"):
        workflow.record_verify(ae, acting_user=mona, password=persona_password("mona"))
    ae = _edit_ae(ae, alice, grade=3, version=ae.version, reason="chart says grade 3")
    workflow.query_answer(query, answer="Corrected to grade 3 per chart.", acting_user=alice)
    workflow.query_close(query, acting_user=mona)
    with pytest.raises(NotPermitted, match="password"):
        workflow.record_verify(ae, acting_user=mona, password="wrong")
    ae = workflow.record_verify(ae, acting_user=mona, password=persona_password("mona"))
    assert ae.status == RecordStatus.VERIFIED
    ae = workflow.record_lock(ae, acting_user=mona, password=persona_password("mona"))
    assert ae.status == RecordStatus.LOCKED
    with pytest.raises(NotPermitted, match="locked"):
        _edit_ae(ae, alice, grade=2, version=ae.version, reason="try")
    with pytest.raises(NotPermitted):  # a clerk cannot unlock
        workflow.record_unlock(ae, acting_user=alice, reason="typo")
    with pytest.raises(ValidationFailed, match="reason"):
        workflow.record_unlock(ae, acting_user=mona, reason=" ")
    ae = workflow.record_unlock(ae, acting_user=mona, reason="late lab correction")
    assert ae.status == RecordStatus.SUBMITTED
    reasons = list(ae.history.order_by("history_id").values_list("history_change_reason",
                                                                 flat=True))
    assert "chart says grade 3" in reasons
    assert any(r.startswith("e-signature by mona: verified") for r in reasons)
    assert reasons[-1] == "unlocked: late lab correction"
    assert query.history.count() == 3  # opened, answered, closed


def test_clerk_cannot_verify_and_other_site_cannot_touch(ae, alice, bob):
    workflow.record_submit(ae, acting_user=alice)
    with pytest.raises(NotPermitted):
        workflow.record_verify(ae, acting_user=alice, password=persona_password("alice"))
    with pytest.raises(NotPermitted):
        workflow.record_submit(ae, acting_user=bob)
    with pytest.raises(NotPermitted):
        _edit_ae(ae, bob, grade=3, version=ae.version)


def test_after_submission_every_change_needs_a_reason(ae, alice):
    ae = _edit_ae(ae, alice, grade=3, version=ae.version)  # a draft: no reason needed
    ae = workflow.record_submit(ae, acting_user=alice)
    with pytest.raises(ValidationFailed, match="reason"):
        _edit_ae(ae, alice, grade=2, version=ae.version)
    ae.refresh_from_db()
    assert ae.grade == 3


def test_concurrent_edit_is_refused_and_names_what_changed(ae, alice, mona):
    opened_by_alice = ae.version
    opened_by_mona = ae.version
    _edit_ae(ae, mona, grade=3, version=opened_by_mona)
    with pytest.raises(StaleEdit) as caught:
        _edit_ae(ae, alice, grade=1, version=opened_by_alice)
    assert caught.value.changes[0]["field"] == "grade"
    assert (caught.value.changes[0]["old"], caught.value.changes[0]["new"]) == (2, 3)
    assert caught.value.changes[0]["user"] == "mona"
    ae.refresh_from_db()
    assert ae.grade == 3  # mona's edit stands; alice's was not written


def test_edit_checks_open_queries_once(site_a, alice):
    patient = factories.full_record(site_a, alice)
    cycle = patient.cycles.get()
    clinical.adverse_event_record(patient=patient, term="Vomiting", grade=4,
                                  onset_date=cycle.start_date + dt.timedelta(2), cycle=cycle,
                                  acting_user=alice)
    clinical.drug_administration_record(cycle=cycle, drug="PEM", dose="50000", dose_unit="mg",
                                        acting_user=alice)
    lab = clinical.lab_result_record(patient=patient, test="ALT", value="900", unit="U/L",
                                     collected_date=cycle.start_date, acting_user=alice)
    automatic = DataQuery.objects.filter(automatic=True).exclude(record_model="followup")
    assert set(automatic.values_list("field", flat=True)) == {"serious", "dose", "value"}
    # Saving the same record again does not open a second query on the same field.
    clinical.lab_result_record(patient=patient, test="ALT", value="950", unit="U/L",
                               collected_date=cycle.start_date, instance=lab,
                               expected_version=lab.version, acting_user=alice)
    assert automatic.filter(field="value").count() == 1


def test_patient_submit_submits_every_draft(site_a, alice):
    patient = factories.full_record(site_a, alice)
    count = workflow.patient_submit(patient, acting_user=alice)
    assert count == 8  # patient, diagnosis, line, cycle, drug, AE, lab, follow-up
    assert {r.status for r in workflow.patient_records(patient)} == {RecordStatus.SUBMITTED}


def test_monitor_opens_queries_only_on_submitted_records(ae, mona):
    with pytest.raises(ValidationFailed, match="submitted"):
        workflow.query_open(ae, field="grade", text="?", acting_user=mona)
