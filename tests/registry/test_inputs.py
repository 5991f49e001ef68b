"""Every input is accepted or refused with a message, never a server error: edits of every kind
and every workflow action outside a test transaction, reasons longer than the old 100-character
column, NUL bytes, invalid filters, non-finite numbers, missing versions, future dates, huge
search text, and redirects that stay on the registry's pages."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from urllib.parse import urlencode

import pytest
from django import forms as django_forms
from django.utils import timezone

from registry import forms, limits
from registry.errors import ValidationFailed
from registry.models import (
    AdverseEvent,
    Concept,
    DataQuery,
    Department,
    DrugAdministration,
    FollowUp,
    Patient,
    RecordStatus,
    Role,
    SiteTerm,
    TermMapping,
    TreatmentLine,
)
from registry.services import clinical
from registry.services.organisation import user_add
from registry.services.terminology import site_term_get_or_create
from registry.views.kinds import KINDS
from tests.conftest import persona_password
from tests.registry import factories
from tests.registry.formdata import record_form

pytestmark = [pytest.mark.usefixtures("vocabulary"), pytest.mark.postgres]

# A monitor whose login is an e-mail address of 47 characters: "e-signature by <login>: ..."
# was longer than the old reason column.
LONG_LOGIN = "clinical.data.monitor.0001@hospital-a.example.cn"
REASON_137 = ("Corrected after source data verification against the paper chart of the "
              "outpatient visit; see the monitoring visit report, page 4.")
ALL_KINDS = ["patient", *KINDS]


@pytest.fixture
def record_a(site_a, alice):
    return factories.full_record(site_a, alice)


@pytest.fixture
def monitor(site_a):
    return user_add(username=LONG_LOGIN, role=Role.MONITOR, site_codes=[site_a.code],
                    password=persona_password("monitor"), acting_user=None)[0]


def _record(kind: str, patient: Patient):
    if kind == "patient":
        return Patient.objects.get(pk=patient.pk)
    return KINDS[kind].model.objects.filter(patient=patient).order_by("pk").first()


def _base(patient: Patient) -> str:
    return f"/patients/{patient.registry_id}/"


def _edit(client, patient, kind, record, **changes):
    """GET the edit page and POST its form back as a browser would, with `changes`."""
    url = f"{_base(patient)}{kind}/{record.pk}/edit/"
    page = client.get(url)
    assert page.status_code == 200, url
    data = {**record_form(page.text).values, **changes}
    return url, data, client.post(url, data)


def _sign(client, patient, kind, record, action, **data):
    return client.post(f"{_base(patient)}{kind}/{record.pk}/{action}/", data)


# -- edits and workflow outside a test transaction -------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ALL_KINDS)
def test_every_kind_is_edited_and_a_second_clerk_gets_a_clean_conflict(client, kind, record_a,
                                                                      alice, mona):
    """A POST to the edit page of every kind saves (a follow-up's was a 500), and a clerk whose
    form is older is refused with the changes listed, nothing written."""
    record = _record(kind, record_a)
    client.force_login(alice)
    url, stale_form, saved = _edit(client, record_a, kind, record)
    assert saved.status_code == 302, saved.content[:500]
    after = type(record).objects.get(pk=record.pk)
    assert after.version == record.version + 1
    assert after.history.latest("history_date").history_change_reason == "edited while draft"
    # mona saved meanwhile from the same page; alice's older form is a clean conflict.
    refused = client.post(url, stale_form)
    assert refused.status_code == 200
    assert "Someone else saved this record" in refused.text
    assert type(record).objects.get(pk=record.pk).version == after.version


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ALL_KINDS)
def test_every_workflow_action_on_every_kind_outside_a_test_transaction(client, kind, record_a,
                                                                        alice, monitor):
    """Submit, query open / answer / close, verify, lock, unlock with a 137-character reason and
    an edit with one, by a monitor whose login is a 47-character e-mail address."""
    model = Patient if kind == "patient" else KINDS[kind].model
    record = _record(kind, record_a)
    DataQuery.objects.filter(patient=record_a).delete()  # the factory's edit-check query
    client.force_login(alice)
    response = client.post(f"{_base(record_a)}submit/")
    assert response.status_code == 302
    assert model.objects.get(pk=record.pk).status == RecordStatus.SUBMITTED

    client.force_login(monitor)
    response = client.post(f"{_base(record_a)}{kind}/{record.pk}/query/",
                           {"field": "", "text": "Please check against the source."})
    assert response.status_code == 302
    query = DataQuery.objects.get(record_model=kind, record_id=record.pk)
    client.force_login(alice)
    response = client.post(f"/queries/{query.pk}/answer/", {"answer": "Checked, correct."})
    assert response.status_code == 302
    assert DataQuery.objects.get(pk=query.pk).status == DataQuery.Status.ANSWERED
    client.force_login(monitor)
    assert client.post(f"/queries/{query.pk}/close/").status_code == 302
    assert DataQuery.objects.get(pk=query.pk).status == DataQuery.Status.CLOSED

    for action, status in (("verify", RecordStatus.VERIFIED), ("lock", RecordStatus.LOCKED)):
        response = _sign(client, record_a, kind, record, action,
                         password=persona_password("monitor"))
        assert response.status_code == 302, (action, response.content[:300])
        row = model.objects.get(pk=record.pk)
        assert row.status == status
        assert LONG_LOGIN in row.history.latest("history_date").history_change_reason

    response = _sign(client, record_a, kind, record, "unlock", reason=REASON_137)
    assert response.status_code == 302
    row = model.objects.get(pk=record.pk)
    assert row.status == RecordStatus.SUBMITTED
    assert row.history.latest("history_date").history_change_reason == f"unlocked: {REASON_137}"

    client.force_login(alice)
    _url, _data, saved = _edit(client, record_a, kind, row, change_reason=REASON_137)
    assert saved.status_code == 302
    row = model.objects.get(pk=record.pk)
    assert row.history.latest("history_date").history_change_reason == REASON_137


def _new_record_data(kind: str, patient: Patient) -> dict[str, str]:
    line = TreatmentLine.objects.get(patient=patient, line_no=1)
    cycle = line.cycles.get(cycle_no=1)
    day = cycle.start_date
    return {
        "diagnosis": {"diagnosis_date": str(factories.DIAGNOSED + dt.timedelta(days=2)),
                      "cancer": "C18", "stage_group": "III", "t": "T3", "n": "N1", "m": "M0",
                      "ecog": "1", "biomarkers": "KRAS+"},
        "treatmentline": {"line_no": "2", "regimen": "FOLFOX", "intent": "palliative",
                          "start_date": str(day + dt.timedelta(days=40))},
        "cycle": {"line": str(line.pk), "cycle_no": "2", "length_days": "21",
                  "start_date": str(day + dt.timedelta(days=21)), "bsa_m2": "1.75"},
        "drugadministration": {"cycle": str(cycle.pk), "day": "8", "drug": "DDP",
                               "dose": "75.5", "dose_unit": "mg/m2", "route": "iv",
                               "purpose": "antineoplastic"},
        "adverseevent": {"term": "Fatigue", "grade": "1", "cycle": str(cycle.pk),
                         "onset_date": str(day + dt.timedelta(days=3)),
                         "resolved_date": str(day + dt.timedelta(days=9))},
        "labresult": {"test": "ANC", "value": "2.1", "unit": "10^9/L", "cycle": str(cycle.pk),
                      "collected_date": str(day + dt.timedelta(days=20))},
        "followup": {"followup_date": str(day + dt.timedelta(days=90)), "vital_status": "alive",
                     "progression": "true", "progression_date": str(day + dt.timedelta(days=80)),
                     "ecog": "1"},
    }[kind]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ALL_KINDS)
def test_every_kind_is_created_outside_a_test_transaction(client, kind, record_a, alice):
    client.force_login(alice)
    if kind == "patient":
        response = client.post("/patients/new/", {
            "site": "SITE-A", "patient_no": "ZY-2024-000999", "sex": "M", "birth_year": "1958",
            "consent_scope": "academic", "consent_date": "2024-01-02"})
        assert response.status_code == 302
        assert Patient.objects.filter(site=record_a.site).count() == 2
        return
    model = KINDS[kind].model
    before = model.objects.filter(patient=record_a).count()
    response = client.post(f"{_base(record_a)}{kind}/new/", _new_record_data(kind, record_a))
    assert response.status_code == 302, response.content[:800]
    assert model.objects.filter(patient=record_a).count() == before + 1
    newest = model.objects.filter(patient=record_a).latest("pk")
    assert newest.history.get().history_change_reason.endswith("recorded")


@pytest.mark.django_db(transaction=True)
def test_a_reason_longer_than_the_limit_is_refused_at_the_field(client, record_a, alice, mona):
    ae = _record("adverseevent", record_a)
    client.force_login(alice)
    client.post(f"{_base(record_a)}submit/")
    too_long = "x" * (limits.REASON_MAX_LENGTH + 1)
    _url, _data, refused = _edit(client, record_a, "adverseevent", ae, change_reason=too_long)
    assert refused.status_code == 200
    assert f"at most {limits.REASON_MAX_LENGTH} characters" in refused.text
    assert AdverseEvent.objects.get(pk=ae.pk).version == ae.version + 1  # only the submit
    with pytest.raises(ValidationFailed, match="at most"):
        clinical.adverse_event_record(
            patient=record_a, term="Nausea", grade=2, onset_date=ae.onset_date, instance=ae,
            expected_version=ae.version + 1, change_reason=too_long, acting_user=alice)


# -- mapping review: long words and long reasons -----------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_approving_a_long_word_and_a_long_not_mappable_reason(client, site_a, alice, monitor):
    word = "长效重组人粒细胞刺激因子注射液" * 8  # 120 characters
    assert len(word) == 120
    term = site_term_get_or_create(site=site_a, domain="drug", text=word, acting_user=alice)
    concept = Concept.objects.filter(domain="drug").order_by("pk").first()
    client.force_login(monitor)
    response = client.post("/mapping/act", {"action": "approve", "term": str(term.pk),
                                            "concept": str(concept.pk)})
    assert response.status_code == 302
    assert TermMapping.objects.get(site_term=term, status="approved").concept == concept

    other = site_term_get_or_create(site=site_a, domain="drug", text="自备药", acting_user=alice)
    reason = "Patient's own medicine brought from home; no product name recorded. " * 2 + "x" * 14
    assert len(reason) == 150
    response = client.post("/mapping/act", {"action": "unmappable", "term": str(other.pk),
                                            "reason": reason})
    assert response.status_code == 302
    other.refresh_from_db()
    assert other.unmappable
    assert other.history.latest("history_date").history_change_reason == f"not mappable: {reason}"
    # Past the limit: a message, nothing written.
    third = site_term_get_or_create(site=site_a, domain="drug", text="其他", acting_user=alice)
    response = client.post("/mapping/act", {"action": "unmappable", "term": str(third.pk),
                                            "reason": "y" * (limits.REASON_MAX_LENGTH + 1)},
                           follow=True)
    assert response.status_code == 200 and "at most" in response.text
    assert not SiteTerm.objects.get(pk=third.pk).unmappable


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("field,value", [("term", "abc"), ("term", "-1"), ("term", "1e308"),
                                         ("concept", "x"), ("mapping", "9" * 30)])
def test_mapping_actions_with_ids_that_are_not_ids_are_404(client, site_a, alice, monitor,
                                                           field, value):
    term = site_term_get_or_create(site=site_a, domain="drug", text="某药", acting_user=alice)
    concept = Concept.objects.filter(domain="drug").order_by("pk").first()
    data = {"action": "reject" if field == "mapping" else "approve", "term": str(term.pk),
            "concept": str(concept.pk), field: value}
    client.force_login(monitor)
    assert client.post("/mapping/act", data).status_code == 404
    assert not TermMapping.objects.filter(site_term=term, status="approved").exists()


def test_mapping_act_redirects_only_to_the_registrys_own_pages(client, site_a, alice, mona):
    client.force_login(mona)
    evil = client.post("/mapping/act", {"action": "nothing"},
                       HTTP_REFERER="https://evil.example.com/phish")
    assert evil.status_code == 302 and evil["Location"] == "/mapping/"
    scheme_relative = client.post("/mapping/act", {"action": "nothing"},
                                  HTTP_REFERER="//evil.example.com/mapping/")
    assert scheme_relative["Location"] == "/mapping/"
    own = client.post("/mapping/act", {"action": "nothing"},
                      HTTP_REFERER="http://testserver/mapping/?domain=drug&page=2")
    assert own["Location"] == "http://testserver/mapping/?domain=drug&page=2"


# -- NUL bytes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", [
    "/patients/?q=%00", "/patients/?department=%00", "/patients/?status=a%00",
    "/patients/R%00X/", "/patients/%00/diagnosis/new/", "/mapping/?site=%00",
    "/mapping/concepts?domain=drug&q=%00", "/terms/suggest?domain=drug&q=a%00",
    "/terms/grades?term=%00", "/terms/lab-preview?test=%00&unit=%00&value=1",
    "/imports/?x=%00",
])
def test_a_nul_byte_in_a_path_or_query_is_a_400(client, alice, url):
    client.force_login(alice)
    response = client.get(url)
    assert response.status_code == 400
    assert "NUL" in response.text


def test_a_nul_byte_in_a_form_is_refused_and_nothing_written(client, alice, record_a):
    client.force_login(alice)
    before = FollowUp.objects.filter(patient=record_a).count()
    url = f"{_base(record_a)}followup/new/"
    data = {"followup_date": str(timezone.localdate()), "vital_status": "dead",
            "cause_of_death": "tumour\x00progression"}
    encoded = client.post(url, urlencode(data),
                          content_type="application/x-www-form-urlencoded")
    assert encoded.status_code == 400
    multipart = client.post(url, data)
    assert multipart.status_code == 400 and "NUL" in multipart.text
    assert FollowUp.objects.filter(patient=record_a).count() == before


def test_a_nul_byte_in_a_field_read_raw_by_a_view_is_a_400(client, site_a, alice, mona):
    """mapping/act reads its fields from request.POST (the hostile walk found a 500)."""
    term = site_term_get_or_create(site=site_a, domain="drug", text="某药", acting_user=alice)
    client.force_login(mona)
    for field in ("reason", "concept_code"):
        response = client.post("/mapping/act", {
            "action": "unmappable" if field == "reason" else "choose", "term": str(term.pk),
            field: "a\x00b"})
        assert response.status_code == 400, field
    assert not SiteTerm.objects.get(pk=term.pk).unmappable


# -- query strings --------------------------------------------------------------------------------


def test_invalid_patient_list_filters_are_ignored_with_a_message(client, site_a, alice,
                                                                 record_a):
    client.force_login(alice)
    for params in ({"department": "abc"}, {"department": "-1"}, {"status": "nonsense"},
                   {"site": "SITE-Z"}, {"cancer": "C99'"}, {"page": "abc"},
                   {"page": "99999999999999999999"}, {"department": "9" * 40}):
        response = client.get("/patients/", params)
        assert response.status_code == 200, params
        assert record_a.registry_id in response.text, params
        if "page" not in params:
            assert "were not valid and were ignored" in response.text, params
    # A valid department still filters.
    department = Department.objects.create(site=site_a, name="Thoracic oncology")
    response = client.get("/patients/", {"department": str(department.pk)})
    assert response.status_code == 200 and record_a.registry_id not in response.text
    assert "were not valid" not in response.text


def test_a_huge_search_text_is_refused_with_a_message(client, alice, record_a):
    client.force_login(alice)
    huge = "R" * 1_000_000
    response = client.get("/patients/", {"q": huge})
    assert response.status_code == 200
    assert "were not valid and were ignored" in response.text
    for url in ("/terms/suggest", "/mapping/concepts"):
        answer = client.get(url, {"domain": "drug", "q": huge})
        assert answer.status_code == 400
        assert f"at most {limits.SEARCH_MAX_LENGTH} characters" in answer.json()["error"]
    ok = client.get("/terms/suggest", {"domain": "drug", "q": "R" * limits.SEARCH_MAX_LENGTH})
    assert ok.status_code == 200 and ok.json()["results"] == []


# -- numbers --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dose", ["NaN", "nan", "Infinity", "-Infinity", "1e10", "99999999",
                                  "1e308", "0.0001"])
def test_a_dose_that_is_not_finite_or_too_large_is_refused_at_the_field(client, alice,
                                                                        record_a, dose):
    client.force_login(alice)
    cycle = record_a.cycles.get()
    before = DrugAdministration.objects.count()
    response = client.post(f"{_base(record_a)}drugadministration/new/", {
        "cycle": str(cycle.pk), "day": "2", "drug": "PEM", "dose": dose, "dose_unit": "mg",
        "purpose": "antineoplastic"})
    assert response.status_code == 200
    assert 'class="field field-dose"' in response.text
    assert 'class="errorlist"' in response.text.split('field-dose')[1].split("</p>")[0]
    assert DrugAdministration.objects.count() == before


@pytest.mark.parametrize("dose", ["NaN", "Infinity", "sNaN", "1e10", "99999999", "0.0001"])
def test_the_service_refuses_a_dose_that_does_not_fit_its_column(alice, record_a, dose):
    cycle = record_a.cycles.get()
    with pytest.raises(ValidationFailed) as refused:
        clinical.drug_administration_record(cycle=cycle, drug="PEM", day=3, dose=dose,
                                            dose_unit="mg", acting_user=alice)
    assert "dose" in refused.value.errors


@pytest.mark.parametrize("bsa", [Decimal("NaN"), Decimal("Infinity"), Decimal("1e10"),
                                 Decimal("1.755"), Decimal("0")])
def test_the_service_refuses_a_body_surface_area_that_does_not_fit(alice, record_a, bsa):
    line = TreatmentLine.objects.get(patient=record_a)
    with pytest.raises(ValidationFailed) as refused:
        clinical.cycle_record(line=line, cycle_no=2, start_date=line.start_date, bsa_m2=bsa,
                              acting_user=alice)
    assert "bsa_m2" in refused.value.errors


@pytest.mark.parametrize("bsa", ["NaN", "Infinity", "1e10", "99.99", "1.755"])
def test_a_body_surface_area_form_value_that_does_not_fit_is_refused(client, alice, record_a,
                                                                    bsa):
    client.force_login(alice)
    line = TreatmentLine.objects.get(patient=record_a)
    response = client.post(f"{_base(record_a)}cycle/new/", {
        "line": str(line.pk), "cycle_no": "2", "start_date": str(line.start_date),
        "bsa_m2": bsa})
    assert response.status_code == 200
    assert "field-bsa_m2" in response.text and line.cycles.count() == 1


def test_form_fields_read_their_limits_from_the_columns():
    """Every form field of a record kind that stores into a column of the same name takes
    that column's length and digits (both read registry.limits)."""
    checked = 0
    for spec in KINDS.values():
        columns = {f.name: f for f in spec.model._meta.concrete_fields}
        for name, field in spec.form.base_fields.items():
            column = columns.get(name)
            if column is None:
                continue
            if isinstance(field, django_forms.CharField) and column.max_length:
                assert field.max_length <= column.max_length, (spec.name, name)
                checked += 1
            if isinstance(field, django_forms.DecimalField):
                assert (field.max_digits, field.decimal_places) == (
                    column.max_digits, column.decimal_places), (spec.name, name)
                checked += 1
    assert checked >= 8
    assert SiteTerm._meta.get_field("text").max_length == limits.TERM_TEXT_MAX_LENGTH
    assert forms.DrugForm.base_fields["drug"].max_length == limits.TERM_TEXT_MAX_LENGTH
    assert forms.ReasonForm.base_fields["reason"].max_length == limits.REASON_MAX_LENGTH


def test_a_word_whose_normalised_form_is_too_long_is_refused(alice, record_a):
    word = "\ufdfa" * 100  # NFKC turns each into 18 characters
    with pytest.raises(ValidationFailed) as refused:
        clinical.adverse_event_record(patient=record_a, term=word, grade=1,
                                      onset_date=factories.DIAGNOSED, acting_user=alice)
    assert "term" in refused.value.errors


# -- the version of an edit ----------------------------------------------------------------------


@pytest.mark.parametrize("version", [None, "", "abc", "1.5", "-1", "99999999999999999999"])
def test_a_missing_or_bad_version_is_shown_and_nothing_written(client, alice, record_a,
                                                               version):
    fu = _record("followup", record_a)
    client.force_login(alice)
    url = f"{_base(record_a)}followup/{fu.pk}/edit/"
    data = {**record_form(client.get(url).text).values, "ecog": "2"}
    if version is None:
        del data["version"]
    else:
        data["version"] = version
    response = client.post(url, data)
    assert response.status_code == 200
    assert "reload the record" in response.text
    after = FollowUp.objects.get(pk=fu.pk)
    assert (after.version, after.ecog) == (fu.version, fu.ecog)


# -- dates in the future ---------------------------------------------------------------------------


FAR = "2999-01-01"


@pytest.mark.parametrize("kind,field", [("treatmentline", "end_date"),
                                        ("adverseevent", "resolved_date"),
                                        ("followup", "progression_date"),
                                        ("followup", "followup_date"),
                                        ("diagnosis", "diagnosis_date"),
                                        ("labresult", "collected_date"),
                                        ("patient", "consent_date")])
def test_a_future_date_is_refused_on_every_form(client, alice, record_a, kind, field):
    record = _record(kind, record_a)
    client.force_login(alice)
    _url, _data, response = _edit(client, record_a, kind, record, **{field: FAR})
    assert response.status_code == 200
    assert "is in the future" in response.text
    assert getattr(type(record).objects.get(pk=record.pk), field) != dt.date(2999, 1, 1)


def test_the_services_refuse_future_end_resolution_and_progression_dates(alice, record_a):
    far = dt.date(2999, 1, 1)
    line = TreatmentLine.objects.get(patient=record_a)
    with pytest.raises(ValidationFailed, match="in the future"):
        clinical.treatment_line_record(patient=record_a, line_no=2, start_date=line.start_date,
                                       end_date=far, acting_user=alice)
    with pytest.raises(ValidationFailed, match="in the future"):
        clinical.adverse_event_record(patient=record_a, term="Fatigue", grade=1,
                                      onset_date=line.start_date, resolved_date=far,
                                      acting_user=alice)
    with pytest.raises(ValidationFailed, match="in the future"):
        clinical.followup_record(patient=record_a, followup_date=timezone.localdate(),
                                 vital_status="alive", progression=True,
                                 progression_date=far, acting_user=alice)


# -- no inline script (a Content-Security-Policy without 'unsafe-inline') ------------------------


def test_the_mapping_queue_has_no_inline_script(client, mona):
    from django.contrib.staticfiles import finders

    client.force_login(mona)
    page = client.get("/mapping/")
    assert page.status_code == 200
    assert "<script>" not in page.text
    assert re.search(r'<script src="[^"]*registry/mapping_queue\.js" defer>', page.text)
    assert not re.search(r"\son[a-z]+=", page.text.split("</header>")[1])
    with open(finders.find("registry/mapping_queue.js"), encoding="utf-8") as script:
        assert "data-concepts" in script.read()
