"""Every service write leaves a history row naming the user and the reason."""

from io import StringIO

import pytest
from django.apps import apps
from django.contrib.auth.models import User
from django.core.management import call_command
from django.urls import reverse

from registry.audit import SYSTEM_USERNAME, bulk_create_audited, bulk_update_audited, system_user
from registry.errors import ValidationFailed
from registry.models import (
    DERIVED_MODELS,
    Concept,
    DrugAdministration,
    MappingStatus,
    Membership,
    Patient,
    Site,
)
from registry.services import clinical, workflow
from registry.services.mapping import (
    LockedRow,
    mapping_approve,
    mapping_reject,
    recode,
    recode_pending,
    term_resolve,
)
from tests.conftest import persona_password
from tests.registry import factories

pytestmark = pytest.mark.usefixtures("vocabulary")


def _history_models():
    return [m for m in apps.get_app_config("registry").get_models()
            if m.__name__.startswith("Historical")]


def test_every_audited_model_has_history():
    audited = {m.__name__.removeprefix("Historical") for m in _history_models()}
    models = {m.__name__ for m in apps.get_app_config("registry").get_models()
              if not m.__name__.startswith("Historical") and m not in DERIVED_MODELS}
    assert models <= audited


def test_every_service_write_is_attributed(site_a, alice):
    mark = {m: m.objects.count() for m in _history_models()}
    factories.full_record(site_a, alice)
    system = system_user()
    written = 0
    for model, before in mark.items():
        for row in model.objects.order_by("history_id")[before:]:
            written += 1
            # The factory's mapping file is loaded by an unattended job, as the system.
            by_system = row.history_change_reason == "site mapping file"
            assert row.history_user_id == (system.pk if by_system else alice.pk), (
                model.__name__, row)
            assert row.history_change_reason, (model.__name__, row)
    # patient, diagnosis, line, cycle, drug, AE, lab, follow-up, site terms and mappings
    assert written >= 15


def test_bulk_paths_write_history_too(alice):
    sites = bulk_create_audited(
        Site, [Site(code=f"BULK{i}", name=f"Bulk {i}") for i in range(3)],
        acting_user=alice, reason="bulk test",
    )
    assert Site.history.filter(code__startswith="BULK", history_type="+").count() == 3
    for site in sites:
        site.province = "Hubei"
    bulk_update_audited(Site, sites, ["province"], acting_user=alice, reason="province fix")
    changed = Site.history.filter(code__startswith="BULK", history_type="~")
    assert changed.count() == 3
    assert {(h.history_user_id, h.history_change_reason) for h in changed} == {
        (alice.pk, "province fix")}


def test_a_write_without_reason_is_refused(alice):
    with pytest.raises(ValidationFailed, match="reason"):
        bulk_create_audited(Site, [Site(code="NOREASON", name="x")], acting_user=alice,
                            reason=" ")
    assert not Site.objects.filter(code="NOREASON").exists()


# -- every history row names a user and a reason -------------------------------------------------


def _anonymous_history() -> list[tuple[str, int, str]]:
    """(history model, history id, what is missing) for every history row, in every history
    table of the project, with no user or no reason."""
    missing = []
    for model in _history_models_of_every_app():
        for history_id, user_id, reason in model.objects.values_list(
                "history_id", "history_user_id", "history_change_reason"):
            if user_id is None:
                missing.append((model.__name__, history_id, "user"))
            if not (reason or "").strip():
                missing.append((model.__name__, history_id, "reason"))
    return missing


def _history_models_of_every_app():
    from simple_history.models import registered_models

    # Many-to-many histories (a data request's sites and team) have no user or reason of
    # their own: each row belongs to a history row of the request, which has both.
    return [model.history.model for model in registered_models.values()
            if hasattr(model, "history")]


@pytest.mark.django_db(transaction=True)
def test_unattended_jobs_write_as_the_system_account(tmp_path, mona):
    """Management commands, loaders and services called with no acting user leave history rows
    that name the system account and a reason, never nobody."""
    call_command("load_starter_vocabulary", stdout=StringIO())
    call_command("add_site", "SITE-C", "Site C Hospital", "--province", "Hunan",
                 stdout=StringIO())
    call_command("add_user", "carl", "--role", "clerk", "--site", "SITE-C", stdout=StringIO())
    (tmp_path / "CONCEPT.csv").write_text(
        "concept_id\tconcept_name\tdomain_id\tvocabulary_id\tconcept_class_id\t"
        "standard_concept\tconcept_code\tvalid_start_date\tvalid_end_date\tinvalid_reason\n"
        "1397599\tcisplatin\tDrug\tATC\tATC 5th\tC\tL01XA01\t19700101\t20991231\t\n"
        "9000001\ta new drug\tDrug\tATC\tATC 5th\tC\tL01XX99\t19700101\t20991231\t\n",
        encoding="utf-8")
    (tmp_path / "CONCEPT_SYNONYM.csv").write_text(
        "concept_id\tconcept_synonym_name\tlanguage_concept_id\n9000001\tnewdrug\t4180186\n",
        encoding="utf-8")
    call_command("load_vocabulary", str(tmp_path), stdout=StringIO())
    call_command("seed_demo", "--patients", "12", "--sites", "1", "--seed", "5",
                 stdout=StringIO())
    site_c = Site.objects.get(code="SITE-C")
    term, _ = term_resolve(site=site_c, domain="drug", text="DDP", acting_user=None)
    patient = factories.full_record(site_c, User.objects.get(username="carl"))
    mapping_approve(site_term=term, concept=Concept.objects.get(code="L01XA02"),
                    acting_user=None, reason="vocabulary update")

    assert _anonymous_history() == []
    system = User.objects.get(username=SYSTEM_USERNAME)
    assert not system.is_active and not system.has_usable_password()
    assert Site.history.get(code="SITE-C", history_type="+").history_user == system
    assert Concept.history.filter(code="L01XX99").get().history_user == system
    assert Membership.history.get(user__username="carl").history_user == system
    recoded = DrugAdministration.history.filter(patient=patient).latest("history_id")
    assert (recoded.history_user, recoded.drug.code) == (system, "L01XA02")
    seeded = Patient.history.exclude(site=site_c)
    assert seeded.exists() and set(seeded.values_list("history_user", flat=True)) == {system.pk}


@pytest.mark.django_db(transaction=True)
def test_the_system_account_is_created_once():
    assert system_user() == system_user()
    assert User.objects.filter(username=SYSTEM_USERNAME).count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_copy_writes_attribute_the_system_account(site_a):
    import pandas as pd

    from registry.audit import copy_frame_audited
    from registry.models import Department

    (dept_id,) = copy_frame_audited(Department, pd.DataFrame({"site_id": [site_a.pk],
                                                              "name": ["Oncology 3"]}),
                                    acting_user=None, reason="copy test")
    row = Department.history.get(id=dept_id)
    assert (row.history_user.username, row.history_change_reason) == (SYSTEM_USERNAME,
                                                                      "copy test")
    assert _anonymous_history() == []


# -- re-coding leaves locked records alone --------------------------------------------------------


def _lock(record, *, clerk, monitor):
    record = workflow.record_submit(record, acting_user=clerk)
    password = persona_password(monitor.username)
    record = workflow.record_verify(record, acting_user=monitor, password=password)
    return workflow.record_lock(record, acting_user=monitor, password=password)


def _drug_rows(site, clerk, n):
    """n patients' cisplatin rows (the word "DDP", auto-approved as L01XA01)."""
    return [DrugAdministration.objects.get(patient=factories.full_record(site, clerk))
            for _ in range(n)]


@pytest.mark.django_db(transaction=True)
def test_recoding_leaves_locked_records_unchanged_and_lists_them(site_a, alice, mona):
    locked, open_row = _drug_rows(site_a, alice, 2)
    locked = _lock(locked, clerk=alice, monitor=mona)
    assert (locked.drug.code, open_row.drug.code) == ("L01XA01", "L01XA01")
    history_before = locked.history.count()
    term = locked.drug_term

    result = recode(term, Concept.objects.get(code="L01XA02"), acting_user=mona,
                    reason="pharmacy corrected")

    assert result.changed == 1
    expected = LockedRow(site="SITE-A", registry_id=locked.patient.registry_id,
                         kind="drugadministration", id=locked.pk)
    assert result.locked == (expected,)
    frozen = DrugAdministration.objects.get(pk=locked.pk)
    assert (frozen.drug.code, frozen.version, frozen.status) == ("L01XA01", locked.version,
                                                                 "locked")
    assert frozen.history.count() == history_before
    assert DrugAdministration.objects.get(pk=open_row.pk).drug.code == "L01XA02"


@pytest.mark.django_db(transaction=True)
def test_locked_records_wait_for_an_unlock_then_are_recoded(site_a, alice, mona):
    (row,) = _drug_rows(site_a, alice, 1)
    row = _lock(row, clerk=alice, monitor=mona)
    term = row.drug_term
    mapping_approve(site_term=term, concept=Concept.objects.get(code="L01XA02"),
                    acting_user=mona, reason="pharmacy corrected")
    assert DrugAdministration.objects.get(pk=row.pk).drug.code == "L01XA01"
    assert [r.id for r in recode_pending(term)] == [row.pk]

    # Still locked: approving again changes nothing.
    mapping_approve(site_term=term, concept=Concept.objects.get(code="L01XA02"),
                    acting_user=mona, reason="pharmacy corrected")
    assert DrugAdministration.objects.get(pk=row.pk).drug.code == "L01XA01"

    unlocked = workflow.record_unlock(DrugAdministration.objects.get(pk=row.pk),
                                      acting_user=mona, reason="dose to be checked")
    recoded = DrugAdministration.objects.get(pk=row.pk)
    assert (recoded.drug.code, recoded.status) == ("L01XA02", "submitted")
    assert recoded.version == unlocked.version == row.version + 2  # the unlock, the re-code
    assert recode_pending(term) == []
    last = recoded.history.latest("history_id")
    assert (last.history_user, last.drug_id) == (mona, recoded.drug_id)
    assert last.history_change_reason.startswith("re-coded after unlock")


@pytest.mark.django_db(transaction=True)
def test_a_locked_lab_gets_its_canonical_value_when_unlocked(site_a, alice, mona):
    from registry.models import LabResult

    patient = factories.patient(site_a, alice)
    lab = clinical.lab_result_record(patient=patient, test="ANC", value="1500",
                                     unit="个/立方毫米", collected_date=factories.DIAGNOSED,
                                     acting_user=alice)
    lab = _lock(lab, clerk=alice, monitor=mona)
    mapping_approve(site_term=lab.unit_term, concept=Concept.objects.get(code="/mm3"),
                    acting_user=mona)
    frozen = LabResult.objects.get(pk=lab.pk)
    assert (frozen.unit_id, frozen.value_canonical, frozen.unit_flag) == (None, None, "unmapped")
    workflow.record_unlock(frozen, acting_user=mona, reason="unit mapped")
    recoded = LabResult.objects.get(pk=lab.pk)
    assert (recoded.unit.code, recoded.unit_flag) == ("/mm3", "")
    assert recoded.value_canonical == pytest.approx(1.5)


@pytest.mark.django_db(transaction=True)
def test_withdrawing_a_mapping_leaves_locked_records_too(site_a, alice, mona):
    (row,) = _drug_rows(site_a, alice, 1)
    row = _lock(row, clerk=alice, monitor=mona)
    mapping_reject(mapping=row.drug_term.mappings.get(status=MappingStatus.APPROVED),
                   acting_user=mona, reason="not this drug")
    assert DrugAdministration.objects.get(pk=row.pk).drug.code == "L01XA01"
    assert [r.id for r in recode_pending(row.drug_term)] == [row.pk]


@pytest.mark.django_db(transaction=True)
def test_the_review_queue_names_the_locked_records_a_recode_skipped(client, site_a, alice,
                                                                    mona):
    locked, open_row = _drug_rows(site_a, alice, 2)
    locked = _lock(locked, clerk=alice, monitor=mona)
    client.force_login(mona)
    response = client.post(reverse("mapping_act"), {
        "action": "approve", "term": locked.drug_term_id,
        "concept": Concept.objects.get(code="L01XA02").pk}, follow=True)
    assert response.status_code == 200
    warnings = [str(m) for m in response.context["messages"]]
    assert any(f"SITE-A {locked.patient.registry_id} drugadministration #{locked.pk}" in m
               for m in warnings), warnings
    assert DrugAdministration.objects.get(pk=locked.pk).drug.code == "L01XA01"
    assert DrugAdministration.objects.get(pk=open_row.pk).drug.code == "L01XA02"
    assert locked.drug_term.mappings.get(status=MappingStatus.APPROVED).concept.code == "L01XA02"


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_import_run_by_a_worker_without_a_user_is_attributed(tmp_path, site_a,
                                                                 redis_worker):
    """The Celery path: an extract received with no acting user (import_extract without
    --user), imported by a real worker on Redis, writes history rows naming the system
    account."""
    from registry.models import ImportBatch
    from registry.services.imports import batch_create
    from registry.services.organisation import department_get_or_create
    from registry.tasks import extract_import_task
    from tests.registry.test_imports import GOOD, write

    # The import's own creation of new departments is fixed with the rest of the import path;
    # this test is about the attribution of what the worker writes through the audited paths.
    department_get_or_create(site=site_a, name="肿瘤内科", acting_user=None)
    batch = batch_create(site=site_a, path=write(tmp_path / "extract", GOOD), acting_user=None)
    assert extract_import_task.delay(batch.pk).get(timeout=60) == ImportBatch.Status.IMPORTED
    assert _anonymous_history() == []
    system = User.objects.get(username=SYSTEM_USERNAME)
    written = DrugAdministration.history.filter(site=site_a)
    assert written.count() == 2
    assert set(written.values_list("history_user", flat=True)) == {system.pk}
    batch_history = ImportBatch.history.filter(id=batch.pk)
    assert batch_history.count() >= 3  # received, started, imported
    assert set(batch_history.values_list("history_user", flat=True)) == {system.pk}
