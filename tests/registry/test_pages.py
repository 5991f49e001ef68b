"""Clerk and monitor pages over HTTP: scoping, forms, workflow, no lost edits, audit, and
bounded query counts."""

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from registry.models import AdverseEvent, DataQuery, FollowUp, RecordStatus
from registry.pseudonyms import hospital_number_hash
from registry.services import clinical
from tests.conftest import persona_password
from tests.registry import factories

pytestmark = pytest.mark.usefixtures("vocabulary")


@pytest.fixture
def record_a(site_a, alice):
    return factories.full_record(site_a, alice)


@pytest.fixture
def as_alice(client, alice):
    client.force_login(alice)
    return client


def test_another_sites_patient_and_records_are_404(client, bob, record_a):
    client.force_login(bob)
    ae = AdverseEvent.objects.get(patient=record_a)
    base = f"/patients/{record_a.registry_id}/"
    for url in (base, f"{base}adverseevent/{ae.pk}/edit/", f"{base}adverseevent/{ae.pk}/audit/",
                f"{base}diagnosis/new/", f"{base}patient/{record_a.pk}/verify/"):
        assert client.get(url).status_code == 404, url
    assert record_a.registry_id not in client.get("/patients/").text


def test_search_by_registry_id_or_hospital_number(as_alice, site_a, alice, record_a):
    other = factories.patient(site_a, alice, patient_no="ZY2024000777")
    page = as_alice.get("/patients/", {"q": "ZY2024000777"})
    assert other.registry_id in page.text and record_a.registry_id not in page.text
    assert other.hospital_number_hash == hospital_number_hash("SITE-A", "ZY2024000777")
    page = as_alice.get("/patients/", {"q": record_a.registry_id.lower()})
    assert record_a.registry_id in page.text and other.registry_id not in page.text
    page = as_alice.get("/patients/", {"cancer": "C34"})
    assert record_a.registry_id in page.text and other.registry_id not in page.text


def test_queue_lists_patients_due_for_follow_up_until_follow_up_ends(as_alice, alice, record_a):
    """Alive at a last visit over 90 days ago is due; a recent visit, death or withdrawal is not."""
    from registry.selectors.patients import work_queue

    def due():
        return list(work_queue(alice).due_followup)

    record_a.refresh_from_db()
    visit = record_a.followups.get()
    assert record_a.last_followup_date == visit.followup_date and not record_a.followup_closed
    assert due() == [record_a]
    assert record_a.registry_id in as_alice.get("/").text
    recent = timezone.localdate() - dt.timedelta(days=10)
    clinical.followup_record(patient=record_a, followup_date=recent, vital_status="alive",
                             acting_user=alice)
    record_a.refresh_from_db()
    assert record_a.last_followup_date == recent and due() == []
    # An edit that moves the visit back makes the patient due again; death ends follow-up.
    latest = record_a.followups.get(followup_date=recent)
    clinical.followup_record(patient=record_a, followup_date=recent - dt.timedelta(days=200),
                             vital_status="alive", instance=latest,
                             expected_version=latest.version, acting_user=alice)
    assert due() == [record_a]
    clinical.followup_record(patient=record_a, followup_date=recent - dt.timedelta(days=100),
                             vital_status="dead", acting_user=alice)
    record_a.refresh_from_db()
    assert record_a.followup_closed and due() == []
    # Derived columns are not part of the patient's audited content.
    assert not hasattr(record_a.history.model, "last_followup_date")


def test_add_an_adverse_event_through_the_form(as_alice, record_a):
    cycle = record_a.cycles.get()
    url = f"/patients/{record_a.registry_id}/adverseevent/new/"
    data = {"term": "呕吐", "grade": "2", "onset_date": str(cycle.start_date + dt.timedelta(2)),
            "cycle": str(cycle.pk)}
    response = as_alice.post(url, data)
    assert response.status_code == 302
    assert AdverseEvent.objects.filter(patient=record_a, ae__code="Vomiting").count() == 1
    # The same form posted twice (a double click) does not make a duplicate.
    again = as_alice.post(url, data)
    assert again.status_code == 200 and "already recorded" in again.text
    assert AdverseEvent.objects.filter(patient=record_a, ae__code="Vomiting").count() == 1


def test_bad_input_is_shown_at_the_field(as_alice, record_a):
    url = f"/patients/{record_a.registry_id}/adverseevent/new/"
    response = as_alice.post(url, {"term": "Nausea", "grade": "4",
                                   "onset_date": str(factories.DIAGNOSED)})
    assert response.status_code == 200
    assert "Grade 4 is not defined for Nausea" in response.text
    response = as_alice.post(f"/patients/{record_a.registry_id}/drugadministration/new/",
                             {"cycle": str(record_a.cycles.get().pk), "day": "1",
                              "drug": "PEM", "dose": "-3", "dose_unit": "mg",
                              "purpose": "antineoplastic"})
    assert "The dose must be positive" in response.text


def test_script_in_free_text_is_stored_and_shown_escaped(as_alice, record_a):
    fu = FollowUp.objects.get(patient=record_a)
    date = fu.followup_date + dt.timedelta(days=30)
    as_alice.post(f"/patients/{record_a.registry_id}/followup/new/", {
        "followup_date": str(date), "vital_status": "dead",
        "cause_of_death": "<script>alert(1)</script>"})
    stored = FollowUp.objects.get(patient=record_a, followup_date=date)
    assert stored.cause_of_death == "<script>alert(1)</script>"
    audit = as_alice.get(f"/patients/{record_a.registry_id}/followup/{stored.pk}/audit/")
    assert "<script>alert(1)</script>" not in audit.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in audit.text


def test_concurrent_edit_is_refused_and_input_is_kept(client, alice, mona, record_a):
    ae = AdverseEvent.objects.get(patient=record_a)
    url = f"/patients/{record_a.registry_id}/adverseevent/{ae.pk}/edit/"
    form = {"term": ae.ae_term.text, "onset_date": str(ae.onset_date),
            "cycle": str(ae.cycle_id), "version": str(ae.version)}
    client.force_login(mona)
    assert client.post(url, {**form, "grade": "3"}).status_code == 302
    client.force_login(alice)
    refused = client.post(url, {**form, "grade": "1", "serious": "on"})
    assert refused.status_code == 200
    assert "Someone else saved this record" in refused.text
    assert 'value="1" selected' in refused.text  # alice's input is still on the form
    assert "mona" in refused.text
    ae.refresh_from_db()
    assert ae.grade == 3


def test_monitor_workflow_over_http(client, alice, mona, record_a):
    ae = AdverseEvent.objects.get(patient=record_a)
    base = f"/patients/{record_a.registry_id}/"
    client.force_login(alice)
    client.post(f"{base}submit/")
    ae.refresh_from_db()
    assert ae.status == RecordStatus.SUBMITTED
    client.force_login(mona)
    client.post(f"{base}adverseevent/{ae.pk}/query/", {"field": "grade", "text": "Check grade"})
    query = DataQuery.objects.get(record_id=ae.pk, automatic=False)
    client.force_login(alice)
    edit = client.post(f"{base}adverseevent/{ae.pk}/edit/", {
        "term": ae.ae_term.text, "grade": "3", "onset_date": str(ae.onset_date),
        "cycle": str(ae.cycle_id), "version": str(ae.version)})
    assert "give a reason" in edit.text  # submitted: a reason is required
    client.post(f"{base}adverseevent/{ae.pk}/edit/", {
        "term": ae.ae_term.text, "grade": "3", "onset_date": str(ae.onset_date),
        "cycle": str(ae.cycle_id), "version": str(ae.version), "change_reason": "per chart"})
    client.post(f"/queries/{query.pk}/answer/", {"answer": "Fixed to G3"})
    client.force_login(mona)
    client.post(f"/queries/{query.pk}/close/")
    wrong = client.post(f"{base}adverseevent/{ae.pk}/verify/", {"password": "nope"})
    assert "password is not correct" in wrong.text
    client.post(f"{base}adverseevent/{ae.pk}/verify/", {"password": persona_password("mona")})
    client.post(f"{base}adverseevent/{ae.pk}/lock/", {"password": persona_password("mona")})
    ae.refresh_from_db()
    assert (ae.status, ae.grade) == (RecordStatus.LOCKED, 3)
    csv_export = client.get(f"{base}adverseevent/{ae.pk}/audit/", {"format": "csv"})
    text = csv_export.content.decode("utf-8-sig")
    assert text.startswith("when,who,action,field,old,new,reason")
    assert "per chart" in text and "e-signature by mona" in text


def test_pages_in_chinese(as_alice, record_a):
    page = as_alice.get(f"/patients/{record_a.registry_id}/", HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert page.status_code == 200 and "不良事件" in page.text


def _queries(client, url) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured)


def test_list_chart_and_queue_query_counts_do_not_grow_with_data(as_alice, site_a, alice):
    """No N+1: the same number of queries for a small and a larger chart and list."""
    small = factories.full_record(site_a, alice)
    counts_small = [_queries(as_alice, u) for u in ("/patients/", f"/patients/"
                                                     f"{small.registry_id}/", "/")]
    big = factories.full_record(site_a, alice)
    for extra in range(2, 6):  # more lines, cycles, drugs, labs on one patient
        line = clinical.treatment_line_record(
            patient=big, line_no=extra, start_date=factories.DIAGNOSED + dt.timedelta(100 * extra),
            regimen="DOC", acting_user=alice)
        cycle = clinical.cycle_record(line=line, cycle_no=1, start_date=line.start_date,
                                      acting_user=alice)
        clinical.drug_administration_record(cycle=cycle, drug="DTX", dose="75",
                                            dose_unit="mg/m2", acting_user=alice)
        clinical.lab_result_record(patient=big, test="ANC", value="2.0", unit="10^9/L",
                                   collected_date=line.start_date, cycle=cycle,
                                   acting_user=alice)
    for _ in range(8):
        factories.full_record(site_a, alice)
    counts_big = [_queries(as_alice, u) for u in ("/patients/", f"/patients/"
                                                   f"{big.registry_id}/", "/")]
    assert counts_big == counts_small
    # 25, plus the session saved by every request so that its idle expiry moves on (an UPDATE
    # inside a savepoint: 3 statements).
    assert max(counts_big) <= 28


def test_term_suggestions_offer_cisplatin_for_ddp_and_the_chinese_name(as_alice, record_a):
    for q in ("DDP", "顺铂"):
        results = as_alice.get("/terms/suggest", {"domain": "drug", "q": q}).json()["results"]
        assert any("cisplatin" in r["label"] for r in results), (q, results)
    grades = as_alice.get("/terms/grades", {"term": "恶心"}).json()
    assert grades["term"] == "Nausea" and set(grades["grades"]) == {"1", "2", "3"}
    preview = as_alice.get("/terms/lab-preview", {"test": "ANC", "value": "800",
                                                  "unit": "/mm3"}).json()
    assert preview["canonical"] == "0.8 10*9/L"
    assert preview["proposed"] == {"term": "Neutrophil count decreased", "grade": 3}


@pytest.mark.parametrize(("test", "value", "expected"), [
    ("751-8", 0.4, ("Neutrophil count decreased", 4)),
    ("751-8", 1.6, ("Neutrophil count decreased", 1)),
    ("751-8", 3.0, None),
    ("777-3", 40, ("Platelet count decreased", 3)),
    ("718-7", 85, ("Anemia", 2)),
    ("718-7", 75, ("Anemia", 3)),
    ("1742-6", 250, ("Alanine aminotransferase increased", 3)),
    ("1742-6", 30, None),
])
def test_lab_values_propose_ctcae_grades(test, value, expected):
    from registry.models import Concept
    from registry.views.terms import propose_grade

    lab = Concept.objects.get(vocabulary__code="LOINC", code=test)
    assert propose_grade(lab, value) == expected
