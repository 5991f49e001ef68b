"""Clinical and organisation services: what they write, and bad input refused with nothing
written."""

import datetime as dt

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from registry.errors import NotPermitted, ValidationFailed
from registry.models import (
    AdverseEvent,
    Concept,
    Cycle,
    Diagnosis,
    LabResult,
    Membership,
    Patient,
    Site,
    SiteTerm,
    TermMapping,
)
from registry.pseudonyms import hospital_number_hash
from registry.services import clinical
from registry.services.organisation import user_add
from registry.services.terminology import starter_vocabulary_load
from tests.registry import factories

pytestmark = pytest.mark.usefixtures("vocabulary")

D = factories.DIAGNOSED


def _counts():
    return {m.__name__: m.objects.count() for m in
            (Patient, Diagnosis, Cycle, AdverseEvent, LabResult, SiteTerm, TermMapping)}


def test_patient_is_stored_with_a_keyed_hash_not_the_number(site_a, alice):
    p = factories.patient(site_a, alice, patient_no="00123")
    assert p.hospital_number_hash == hospital_number_hash("SITE-A", "00123")
    assert "00123" not in p.hospital_number_hash
    assert len(p.registry_id) == 13 and p.registry_id.startswith("R")
    # Full-width digits and stray spaces are the same number.
    assert hospital_number_hash("SITE-A", "００１２３ ") == p.hospital_number_hash
    assert hospital_number_hash("SITE-B", "00123") != p.hospital_number_hash


def test_duplicate_hospital_number_within_a_site_is_refused(site_a, site_b, alice, bob):
    factories.patient(site_a, alice, patient_no="X1")
    before = _counts()
    with pytest.raises(ValidationFailed, match="already registered"):
        factories.patient(site_a, alice, patient_no="X1")
    assert _counts() == before
    factories.patient(site_b, bob, patient_no="X1")  # another hospital's X1 is another person


@pytest.mark.parametrize("person", ["ivan", "carol", "pat", "bob"])
def test_wrong_role_or_wrong_site_cannot_register(request, site_a, person):
    user = request.getfixturevalue(person)
    with pytest.raises(NotPermitted):
        factories.patient(site_a, user)
    assert not Patient.objects.exists()


def test_monitor_and_admin_may_enter_data(site_a, mona, ada):
    factories.patient(site_a, mona)
    factories.patient(site_a, ada)
    assert Patient.objects.filter(site=site_a).count() == 2


def test_bad_patient_fields_are_all_reported(site_a, alice):
    with pytest.raises(ValidationFailed) as caught:
        clinical.patient_register(site=site_a, patient_no=" ", sex="X", birth_year=1850,
                                  acting_user=alice)
    assert set(caught.value.errors) == {"patient_no", "sex", "birth_year"}


def test_full_record_resolves_local_words(site_a, alice):
    p = factories.full_record(site_a, alice)
    assert Diagnosis.objects.get(patient=p).cancer.code == "C34"
    assert p.drugs.get().drug.code == "L01XA01"  # DDP -> cisplatin
    lab = LabResult.objects.get(patient=p)
    assert (lab.lab.code, lab.unit.code, lab.value_canonical, lab.unit_flag) == (
        "751-8", "10*9/L", 1.2, "")
    assert p.lines.get().regimen.code == "REG-PEM-CIS"  # PP: pemetrexed + cisplatin
    # A word nobody has mapped is stored with its site term and waits for review.
    line2 = clinical.treatment_line_record(patient=p, line_no=2, start_date=D + dt.timedelta(90),
                                           regimen="本院自拟方案", acting_user=alice)
    assert line2.regimen is None
    assert line2.regimen_term == SiteTerm.objects.get(site=site_a, domain="regimen",
                                                      text="本院自拟方案")


@pytest.mark.parametrize("grade", [0, 6])
def test_grade_outside_1_5_is_refused(site_a, alice, grade):
    p = factories.patient(site_a, alice)
    before = _counts()
    with pytest.raises(ValidationFailed, match="1-5"):
        clinical.adverse_event_record(patient=p, term="Vomiting", grade=grade, onset_date=D,
                                      acting_user=alice)
    assert _counts() == before


@pytest.mark.parametrize(("term", "grade"), [("Nausea", 4), ("恶心", 5),
                                             ("Febrile neutropenia", 1)])
def test_grade_not_defined_for_the_term_is_refused(site_a, alice, term, grade):
    p = factories.patient(site_a, alice)
    with pytest.raises(ValidationFailed, match="not defined"):
        clinical.adverse_event_record(patient=p, term=term, grade=grade, onset_date=D,
                                      acting_user=alice)
    assert not AdverseEvent.objects.exists()


def test_diagnosis_after_death_is_refused(site_a, alice):
    p = factories.patient(site_a, alice)
    clinical.followup_record(patient=p, followup_date=D, vital_status="dead",
                             cause_of_death="cancer", acting_user=alice)
    with pytest.raises(ValidationFailed, match="after the patient's death"):
        clinical.diagnosis_record(patient=p, diagnosis_date=D + dt.timedelta(days=1),
                                  cancer="C34", acting_user=alice)
    assert not Diagnosis.objects.exists()


def test_cycle_before_diagnosis_is_refused(site_a, alice):
    p = factories.full_record(site_a, alice)
    line = p.lines.get()
    before = _counts()
    with pytest.raises(ValidationFailed, match="before the diagnosis"):
        clinical.cycle_record(line=line, cycle_no=2, start_date=D - dt.timedelta(days=3),
                              acting_user=alice)
    assert _counts() == before


def test_treatment_without_diagnosis_is_refused(site_a, alice):
    p = factories.patient(site_a, alice)
    with pytest.raises(ValidationFailed, match="diagnosis before the treatment"):
        clinical.treatment_line_record(patient=p, line_no=1, start_date=D, acting_user=alice)


def test_future_dates_and_bad_doses_are_refused(site_a, alice):
    p = factories.full_record(site_a, alice)
    cycle = p.cycles.get()
    with pytest.raises(ValidationFailed, match="in the future"):
        clinical.diagnosis_record(patient=p, diagnosis_date=timezone.localdate() + dt.timedelta(5),
                                  cancer="C16", acting_user=alice)
    for dose in ("0", "-5", "abc"):
        with pytest.raises(ValidationFailed) as caught:
            clinical.drug_administration_record(cycle=cycle, drug="PEM", dose=dose,
                                                dose_unit="mg/m2", acting_user=alice)
        assert "dose" in caught.value.errors
    with pytest.raises(ValidationFailed, match="already recorded"):
        clinical.drug_administration_record(cycle=cycle, drug="DDP", dose="75",
                                            dose_unit="mg/m2", acting_user=alice)


def test_censored_and_converted_lab_values(site_a, alice):
    p = factories.patient(site_a, alice)
    lab = clinical.lab_result_record(patient=p, test="中性粒细胞绝对值", value="<0.5",
                                     unit="/mm3", collected_date=D, acting_user=alice)
    assert (lab.comparator, lab.value, lab.value_text) == ("<", 0.5, "<0.5")
    hb = clinical.lab_result_record(patient=p, test="HGB", value="9.5", unit="g/dl",
                                    collected_date=D, acting_user=alice)
    assert hb.value_canonical == pytest.approx(95.0) and hb.canonical_unit.code == "g/L"
    bili = clinical.lab_result_record(patient=p, test="TBIL", value="1.0", unit="mg/dL",
                                      collected_date=D, acting_user=alice)
    assert bili.value_canonical == pytest.approx(17.1)


def test_unconvertible_or_unmapped_unit_is_flagged_not_stored_wrong(site_a, alice):
    p = factories.patient(site_a, alice)
    dcp = clinical.lab_result_record(patient=p, test="PIVKA-II", value="40", unit="mAU/mL",
                                     collected_date=D, acting_user=alice)
    assert (dcp.value_canonical, dcp.canonical_unit, dcp.unit_flag) == (None, None,
                                                                         "unconvertible")
    odd = clinical.lab_result_record(patient=p, test="ANC", value="2", unit="格/升",
                                     collected_date=D, acting_user=alice)
    assert (odd.value_canonical, odd.unit_flag) == (None, "unmapped")
    with pytest.raises(ValidationFailed, match="not a number"):
        clinical.lab_result_record(patient=p, test="PLT", value="abc", unit="10^9/L",
                                   collected_date=D, acting_user=alice)


def test_a_word_matching_two_concepts_is_left_for_review(site_a, alice):
    """G/L is 10^9/L; g/l is grams per litre: units compare case-sensitively."""
    p = factories.patient(site_a, alice)
    lab = clinical.lab_result_record(patient=p, test="ANC", value="2.1", unit="G/L",
                                     collected_date=D, acting_user=alice)
    assert lab.unit.code == "10*9/L" and lab.value_canonical == pytest.approx(2.1)


def test_user_add_refuses_unknown_sites_and_wrong_role_shapes(site_a):
    with pytest.raises(ValidationFailed, match="Unknown site code"):
        user_add(username="zed", role="clerk", site_codes=["NOPE"], acting_user=None)
    with pytest.raises(ValidationFailed, match="needs|works at a site"):
        user_add(username="zed", role="clerk", acting_user=None)
    with pytest.raises(ValidationFailed, match="registry-wide"):
        user_add(username="zed", role="committee", site_codes=[site_a.code], acting_user=None)
    with pytest.raises(ValidationFailed, match="Unknown role"):
        user_add(username="zed", role="king", acting_user=None)
    assert not Membership.objects.filter(user__username="zed").exists()


def test_add_site_and_add_user_commands_are_idempotent(capsys):
    call_command("add_site", "ZJ01", "Zhejiang Cancer Hospital", "--province", "Zhejiang")
    call_command("add_site", "ZJ01", "Zhejiang Cancer Hospital", "--province", "Zhejiang")
    assert Site.objects.filter(code="ZJ01").count() == 1
    assert Site.history.filter(code="ZJ01").count() == 1  # the second run changed nothing
    call_command("add_user", "lin", "--role", "clerk", "--site", "ZJ01")
    call_command("add_user", "lin", "--role", "clerk", "--site", "ZJ01")
    assert Membership.objects.filter(user__username="lin").count() == 1
    with pytest.raises(CommandError, match="Unknown site code"):
        call_command("add_user", "lin", "--role", "monitor", "--site", "XX99")


def test_starter_vocabulary_is_idempotent_and_uses_only_listed_codes():
    counts = starter_vocabulary_load(acting_user=None)
    assert counts["concepts_created"] == 0 and counts["synonyms"] == 0
    assert Concept.objects.get(vocabulary__code="ATC", code="L01XA01").name_zh == "顺铂"
    assert Concept.objects.get(vocabulary__code="CTCAE", code="Nausea").allowed_grades() == {
        1, 2, 3}
    assert Concept.objects.get(vocabulary__code="LOINC", code="751-8").attributes[
        "canonical_unit"] == "10*9/L"
