"""The data-quality dashboard: its figures against counts computed here with the ORM, the run on
a real worker, page access per persona, the CSV export and hostile query strings."""

from __future__ import annotations

import csv
import datetime as dt
import io
import time

import pytest
from django.db.models import Count, Exists, F, Max, OuterRef, Q
from django.utils import timezone

from registry import rules
from registry.models import (
    AdverseEvent,
    Cycle,
    Diagnosis,
    DrugAdministration,
    FollowUp,
    LabResult,
    Patient,
    QualityResult,
    QualityRun,
    TreatmentLine,
)
from registry.selectors.bulk import ALL_SITES, records_frame
from registry.services import clinical
from registry.services.quality import (
    FOLLOWUP_OVERDUE_DAYS,
    all_checks,
    quality_run_execute,
    quality_run_request,
    rulebook_checks,
)
from tests.registry import factories

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("vocabulary")]


@pytest.fixture
def cohort(site_a, site_b, alice, bob):
    """Site A: a complete record, one with an unstaged second diagnosis without ECOG and a
    negative lab, one with a drug without a dose and an old visit, a patient with nothing.
    Site B: one complete record."""
    first = factories.full_record(site_a, alice)
    second = factories.full_record(site_a, alice)
    clinical.diagnosis_record(patient=second, diagnosis_date=factories.DIAGNOSED
                              + dt.timedelta(days=3), cancer="C50", acting_user=alice)
    LabResult.objects.filter(patient=second).update(value=-3.0, value_canonical=-3.0)  # legacy
    clinical.lab_result_record(patient=second, test="ANC", value="7", unit="furlongs",
                               collected_date=factories.DIAGNOSED, acting_user=alice)
    third = factories.full_record(site_a, alice)
    cycle = Cycle.objects.get(patient=third)
    clinical.drug_administration_record(cycle=cycle, drug="PEM", acting_user=alice)
    clinical.cycle_record(line=cycle.line, cycle_no=2, start_date=cycle.start_date
                          + dt.timedelta(days=21), length_days=21, acting_user=alice)
    factories.patient(site_a, alice)
    factories.full_record(site_b, bob)
    return first, second, third


def _counts(site, code: str, today: dt.date) -> tuple[int, int] | None:
    """(failing, denominator) of a check at `site`, computed independently with the ORM."""
    at = {"site": site}
    if code == "DIAGNOSIS_STAGE_MISSING":
        rows = Diagnosis.objects.filter(**at)
        return rows.filter(stage_group="").count(), rows.count()
    if code == "DIAGNOSIS_ECOG_MISSING":
        rows = Diagnosis.objects.filter(**at)
        return rows.filter(ecog__isnull=True).count(), rows.count()
    if code == "LINE_REGIMEN_MISSING":
        rows = TreatmentLine.objects.filter(**at)
        return rows.filter(regimen_term__isnull=True).count(), rows.count()
    if code == "DRUG_DOSE_MISSING":
        rows = DrugAdministration.objects.filter(purpose="antineoplastic", **at)
        return rows.filter(Q(dose__isnull=True) | Q(dose_unit="")).count(), rows.count()
    if code == "DIAGNOSIS_CANCER_UNMAPPED":
        rows = Diagnosis.objects.filter(**at)
        return rows.filter(cancer__isnull=True).count(), rows.count()
    if code == "LAB_UNIT_UNCONVERTED":
        rows = LabResult.objects.filter(value__isnull=False, **at)
        return rows.exclude(unit_flag="").count(), rows.count()
    if code == "CYCLE_LENGTH_MISSING":
        rows = Cycle.objects.filter(**at)
        return rows.filter(length_days__isnull=True).count(), rows.count()
    if code == "PATIENT_DIAGNOSIS_MISSING":
        rows = Patient.objects.filter(**at).annotate(n=Count("diagnoses"))
        return rows.filter(n=0).count(), rows.count()
    if code == "PATIENT_FOLLOWUP_OVERDUE":
        dead = FollowUp.objects.filter(patient=OuterRef("pk"), vital_status="dead")
        not_alive = FollowUp.objects.filter(patient=OuterRef("pk")).exclude(vital_status="alive")
        rows = (Patient.objects.filter(withdrawn_date__isnull=True, **at)
                .annotate(last=Max("followups__followup_date"), dead=Exists(dead),
                          not_alive=Exists(not_alive)).filter(dead=False, not_alive=False))
        limit = today - dt.timedelta(days=FOLLOWUP_OVERDUE_DAYS)
        return rows.filter(Q(last__isnull=True) | Q(last__lt=limit)).count(), rows.count()
    if code == "LAB_COUNT_NEGATIVE":
        rows = LabResult.objects.filter(value__isnull=False, **at)
        return rows.filter(value__lt=0).count(), rows.count()
    if code == "DIAGNOSIS_BEFORE_BIRTH":
        rows = Diagnosis.objects.filter(**at)
        return (rows.filter(diagnosis_date__year__lt=F("patient__birth_year")).count(),
                rows.count())
    if code in rules.RULES:
        return None  # counted by hand only above; the plausible cohort breaks none of the rest
    raise AssertionError(f"no independent count for {code}")


def _run(site_ids=None) -> QualityRun:
    run = QualityRun.objects.create(site_ids=site_ids or [])
    assert quality_run_execute(run_id=run.pk) is not None
    run.refresh_from_db()
    return run


def test_figures_equal_independent_counts(cohort, site_a, site_b):
    run = _run()
    assert run.status == QualityRun.Status.DONE
    assert run.steps_done == run.steps_total > 0
    today = timezone.localdate()
    checks = all_checks(as_of=today)[0]
    codes = {c.code for c in checks}
    assert "LAB_COUNT_NEGATIVE" in codes and "PATIENT_FOLLOWUP_OVERDUE" in codes
    assert QualityResult.objects.filter(run=run).count() == 2 * len(checks)
    for check in checks:
        for site in (site_a, site_b):
            result = QualityResult.objects.get(run=run, site=site, check_code=check.code)
            counted = _counts(site, check.code, today)
            if counted is None:
                assert result.failing == 0, (check.code, site.code)
                continue
            failing, denominator = counted
            assert (result.failing, result.denominator) == (failing, denominator), \
                (check.code, site.code)
            expected = 100.0 * failing / denominator if denominator else 0.0
            assert result.percentage == pytest.approx(expected)
            assert result.passed == (expected <= check.threshold)
            assert result.threshold == check.threshold
            assert len(result.failing_ids) == failing
    # The seeded defects are found where they are, and only there.
    assert QualityResult.objects.get(run=run, site=site_a, check_code="LAB_COUNT_NEGATIVE"
                                     ).failing == 1
    assert QualityResult.objects.get(run=run, site=site_b, check_code="LAB_COUNT_NEGATIVE"
                                     ).failing == 0
    second = cohort[1]
    lab = LabResult.objects.get(patient=second, value_canonical__lt=0)
    assert QualityResult.objects.get(run=run, site=site_a, check_code="LAB_COUNT_NEGATIVE"
                                     ).failing_ids == [lab.pk]
    stage = QualityResult.objects.get(run=run, site=site_a, check_code="DIAGNOSIS_STAGE_MISSING")
    assert (stage.failing, stage.denominator, stage.passed) == (1, 4, False)
    unconverted = QualityResult.objects.get(run=run, site=site_a,
                                            check_code="LAB_UNIT_UNCONVERTED")
    assert unconverted.failing == 1 and not unconverted.passed


def test_every_rule_is_a_check(cohort):
    codes = {c.code for c in all_checks(as_of=timezone.localdate())[0]}
    assert set(rules.RULES) <= codes
    assert rulebook_checks()[1] == []


@pytest.mark.parametrize("kind", sorted({r.kind for r in rules.RULES.values()}))
def test_no_rule_is_skipped_for_any_kind(kind, cohort):
    """The bulk reader supplies every column each rule of the kind reads, so the rulebook's
    own evaluation of the stored rows skips none (and a run says nothing was skipped)."""
    frame = records_frame(kind, sites=ALL_SITES)
    assert not frame.empty
    violations, skipped = rules.evaluate(kind, frame)
    assert skipped == []
    assert set(violations.columns) == set(rules.VIOLATION_COLUMNS)
    assert _run().message == ""


# -- the rules that read the meanings of words and the patient's last event ----------------------


@pytest.fixture
def planted(cohort, site_a, site_b, alice, bob):
    """Violations of the rules whose context the reader joins in, planted at both sites in
    different numbers (two at A, one at B): an adverse event graded beyond its term's grades
    (stored before the check existed), labs far above and far below their reference range
    (accepted with a query), a death recorded before a later cycle (stored before the check)."""
    first = cohort[0]
    b_patient = Patient.objects.filter(site=site_b).first()
    for patient, user, n in ((first, alice, 2), (b_patient, bob, 1)):
        cycle = Cycle.objects.filter(patient=patient).first()
        for i in range(n):
            event = clinical.adverse_event_record(
                patient=patient, term="Nausea", grade=3, acting_user=user,
                onset_date=cycle.start_date + dt.timedelta(days=2 + i))
            AdverseEvent.objects.filter(pk=event.pk).update(grade=4 + i)  # legacy: 4 and 5
            clinical.lab_result_record(patient=patient, test="ANC", value=str(70 + i),
                                       unit="10^9/L", acting_user=user,
                                       collected_date=cycle.start_date + dt.timedelta(days=3 + i))
            clinical.lab_result_record(patient=patient, test="ANC", value="0.05", unit="10^9/L",
                                       acting_user=user,
                                       collected_date=cycle.start_date + dt.timedelta(days=5 + i))
        # An unmapped word's grade is not judged (its grades are not known yet).
        clinical.adverse_event_record(patient=patient, term="pruritus of a new kind", grade=5,
                                      onset_date=cycle.start_date, acting_user=user)
        if n == 2:
            death = FollowUp.objects.filter(patient=patient).first()
            FollowUp.objects.filter(pk=death.pk).update(  # legacy: dead before the cycle
                vital_status="dead", cause_of_death="progression",
                followup_date=cycle.start_date - dt.timedelta(days=1))
    dead_b = clinical.followup_record(patient=b_patient, followup_date=factories.DIAGNOSED,
                                      vital_status="alive", acting_user=bob)
    FollowUp.objects.filter(pk=dead_b.pk).update(vital_status="dead", cause_of_death="x")
    return cohort


def _context_counts(site, code: str) -> tuple[int, int]:
    """(failing, denominator) of a rule that reads joined context, counted here in Python
    over ORM rows, not with the reader's SQL."""
    if code == "AE_GRADE_UNDEFINED":
        events = list(AdverseEvent.objects.filter(site=site).select_related("ae"))
        bad = [e for e in events if e.ae is not None and e.grade not in e.ae.allowed_grades()]
        return len(bad), len(events)
    if code in ("LAB_FAR_ABOVE_RANGE", "LAB_FAR_BELOW_RANGE"):
        labs = list(LabResult.objects.filter(site=site, value_canonical__isnull=False)
                    .select_related("lab"))
        bad = 0
        for lab in labs:
            reference = lab.lab.attributes if lab.lab is not None else {}
            if code == "LAB_FAR_ABOVE_RANGE" and reference.get("reference_high") is not None:
                bad += lab.value_canonical > rules.LAB_FAR_ABOVE * reference["reference_high"]
            if code == "LAB_FAR_BELOW_RANGE" and reference.get("reference_low") is not None:
                bad += 0 <= lab.value_canonical < reference["reference_low"] / rules.LAB_FAR_BELOW
        return bad, len(labs)
    if code == "FU_DEATH_BEFORE_EVENT":
        followups = list(FollowUp.objects.filter(site=site))
        bad = 0
        for followup in followups:
            events = [*Diagnosis.objects.filter(patient_id=followup.patient_id)
                      .values_list("diagnosis_date", flat=True),
                      *Cycle.objects.filter(patient_id=followup.patient_id)
                      .values_list("start_date", flat=True)]
            bad += followup.vital_status == "dead" and bool(events) and \
                followup.followup_date < max(events)
        return bad, len(followups)
    raise AssertionError(code)


CONTEXT_RULES = {"AE_GRADE_UNDEFINED": (2, 1), "LAB_FAR_ABOVE_RANGE": (2, 1),
                 "LAB_FAR_BELOW_RANGE": (2, 1), "FU_DEATH_BEFORE_EVENT": (1, 1)}


@pytest.mark.parametrize("code", sorted(CONTEXT_RULES))
def test_rules_reading_joined_context_count_as_independently(code, planted, site_a, site_b):
    run = _run()
    for site, planted_here in zip((site_a, site_b), CONTEXT_RULES[code], strict=True):
        result = QualityResult.objects.get(run=run, site=site, check_code=code)
        failing, denominator = _context_counts(site, code)
        assert failing == planted_here  # the count sees what was planted ...
        assert (result.failing, result.denominator) == (failing, denominator)  # ... and so does
        assert len(result.failing_ids) == failing  # the dashboard
        assert result.passed is False


def test_a_run_over_one_site_writes_only_that_site(cohort, site_a, site_b):
    run = _run([site_b.pk])
    assert set(QualityResult.objects.filter(run=run).values_list("site_id", flat=True)) == {
        site_b.pk}


def test_a_run_is_taken_once(cohort):
    run = _run()
    count = QualityResult.objects.filter(run=run).count()
    assert quality_run_execute(run_id=run.pk) is None  # already done: left alone
    assert QualityResult.objects.filter(run=run).count() == count


def test_a_failing_run_writes_nothing_and_says_why(cohort, monkeypatch):
    from registry.services import quality

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(quality, "cohort_frame", broken)
    run = QualityRun.objects.create()
    with pytest.raises(RuntimeError):
        quality_run_execute(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == QualityRun.Status.FAILED and "disk on fire" in run.message
    assert not QualityResult.objects.filter(run=run).exists()


def test_only_monitors_and_admins_request_runs(cohort, alice, mona, ada, site_a, site_b):
    from registry.errors import NotPermitted

    with pytest.raises(NotPermitted):
        quality_run_request(acting_user=alice)
    assert not QualityRun.objects.exists()
    run = quality_run_request(acting_user=mona, site_ids=[site_a.pk, site_b.pk])
    assert run.site_ids == [site_a.pk]  # another site's run is never asked for by a monitor
    assert run.requested_by == mona
    assert quality_run_request(acting_user=mona) == run  # a pending run is not doubled
    assert quality_run_request(acting_user=ada).site_ids == []  # every site


# -- the run on a real worker -------------------------------------------------------------


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_a_run_requested_from_the_page_runs_on_a_worker(vocabulary, cohort, client, mona,
                                                        site_a, redis_worker):
    client.force_login(mona)
    response = client.post("/quality/run", {"site": site_a.code})
    assert response.status_code == 302
    run = QualityRun.objects.get()
    assert run.site_ids == [site_a.pk] and run.requested_by == mona

    def done():
        run.refresh_from_db()
        return run.status in {QualityRun.Status.DONE, QualityRun.Status.FAILED}

    _wait(done, 60, "the quality run")
    assert run.status == QualityRun.Status.DONE, run.message
    assert run.steps_done == run.steps_total > 0
    today = timezone.localdate()
    for result in QualityResult.objects.filter(run=run):
        assert result.site_id == site_a.pk
        counted = _counts(site_a, result.check_code, today)
        expected = (result.failing, result.denominator) if counted is None else counted
        assert (result.failing, result.denominator) == expected
        if counted is None:
            assert result.failing == 0, result.check_code
    page = client.get(f"/quality/{site_a.code}/")
    assert page.status_code == 200 and "DIAGNOSIS_STAGE_MISSING" in page.text


# -- pages ----------------------------------------------------------------------------------


@pytest.fixture
def two_runs(cohort, site_a):
    """Two finished runs; between them a stage is filled in at site A."""
    first = _run()
    diagnosis = Diagnosis.objects.get(site=site_a, stage_group="")
    Diagnosis.objects.filter(pk=diagnosis.pk).update(stage_group="II")
    second = _run()
    return first, second


def test_site_page_shows_figures_and_trend(client, mona, site_a, two_runs):
    client.force_login(mona)
    page = client.get(f"/quality/{site_a.code}/")
    assert page.status_code == 200
    text = page.text
    assert "DIAGNOSIS_STAGE_MISSING" in text and "LAB_COUNT_NEGATIVE" in text
    assert "25.0% → 0.0%" in text  # the stage filled in between the runs
    negative = QualityResult.objects.get(run=two_runs[1], site=site_a,
                                         check_code="LAB_COUNT_NEGATIVE")
    assert f"/quality/{site_a.code}/LAB_COUNT_NEGATIVE/" in text
    assert not negative.passed


def test_drill_down_links_the_failing_records_charts(client, mona, site_a, two_runs, cohort):
    client.force_login(mona)
    page = client.get(f"/quality/{site_a.code}/LAB_COUNT_NEGATIVE/")
    assert page.status_code == 200
    assert f"/patients/{cohort[1].registry_id}/" in page.text
    assert f"/patients/{cohort[0].registry_id}/" not in page.text
    patients = client.get(f"/quality/{site_a.code}/PATIENT_DIAGNOSIS_MISSING/")
    orphan = Patient.objects.get(site=site_a, diagnoses__isnull=True)
    assert patients.status_code == 200 and f"/patients/{orphan.registry_id}/" in patients.text


def test_overview_compares_the_users_sites(client, mona, ada, site_a, site_b, two_runs):
    client.force_login(mona)
    page = client.get("/quality/")
    assert page.status_code == 200
    assert f"/quality/{site_a.code}/" in page.text and f"/quality/{site_b.code}/" not in page.text
    client.force_login(ada)
    page = client.get("/quality/")
    assert f"/quality/{site_a.code}/" in page.text and f"/quality/{site_b.code}/" in page.text


@pytest.mark.parametrize("persona", ["alice", "bob"])
def test_clerks_and_another_sites_people_get_404(request, client, persona, site_a, two_runs):
    client.force_login(request.getfixturevalue(persona))
    for url in ("/quality/", f"/quality/{site_a.code}/", "/quality/export.csv",
                f"/quality/{site_a.code}/export.csv",
                f"/quality/{site_a.code}/LAB_COUNT_NEGATIVE/"):
        assert client.get(url).status_code == 404, url
    runs = QualityRun.objects.count()
    assert client.post("/quality/run", {"site": site_a.code}).status_code == 404
    assert QualityRun.objects.count() == runs


def test_a_monitor_of_another_site_gets_404(client, site_a, site_b, two_runs):
    from tests.conftest import _person

    other = _person("otto", "monitor", [site_b])
    client.force_login(other)
    assert client.get(f"/quality/{site_a.code}/").status_code == 404
    assert client.get(f"/quality/{site_a.code}/LAB_COUNT_NEGATIVE/").status_code == 404
    assert client.get(f"/quality/{site_b.code}/").status_code == 200
    runs = QualityRun.objects.count()
    assert client.post("/quality/run", {"site": site_a.code}).status_code == 404
    assert QualityRun.objects.count() == runs


def test_anonymous_is_sent_to_login(client, site_a):
    assert client.get("/quality/").status_code == 302


def test_csv_export_is_spreadsheet_safe_and_matches(client, ada, site_a, site_b, two_runs):
    site_a.code = "=HYPERLINK(1)"
    site_a.save()
    client.force_login(ada)
    response = client.get("/quality/export.csv")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    latest = QualityResult.objects.filter(run=two_runs[1])
    assert len(rows) == latest.count()
    assert {r["site"] for r in rows} == {"'=HYPERLINK(1)", site_b.code}
    by_key = {(r["site"].lstrip("'"), r["check"]): r for r in rows}
    for result in latest.select_related("site"):
        row = by_key[(result.site.code, result.check_code)]
        assert int(row["failing_rows"]) == result.failing
        assert int(row["denominator"]) == result.denominator
        assert row["passed"] == ("pass" if result.passed else "fail")
    one = client.get("/quality/SITE-B/export.csv")
    assert one.status_code == 200
    assert {r["site"] for r in csv.DictReader(io.StringIO(one.content.decode()))} == {"SITE-B"}


@pytest.mark.parametrize("url", [
    "/quality/?page=-1", "/quality/SITE-A/?x=%00", "/quality/SITE-A/LAB_COUNT_NEGATIVE/?page=abc",
    "/quality/SITE-A/LAB_COUNT_NEGATIVE/?page=99999999999999999999",
    "/quality/SITE-A/NO_SUCH_CHECK/", "/quality/NO-SUCH-SITE/", "/quality/%27%22%3C/",
    "/quality/SITE-A/%00/", "/quality/" + "x" * 5000 + "/",
])
def test_hostile_query_strings_never_5xx(client, ada, two_runs, url):
    client.force_login(ada)
    assert client.get(url).status_code in {200, 400, 404}


def test_hostile_run_posts_never_5xx(client, mona, site_a, cohort):
    client.force_login(mona)
    for site in ("NO-SUCH", "\x00", "x" * 5000, "SITE-B"):
        assert client.post("/quality/run", {"site": site}).status_code in {400, 404}
    assert not QualityRun.objects.exists()


def test_the_nightly_task_queues_a_run_of_every_site_as_the_system(
        cohort, site_a, site_b, django_capture_on_commit_callbacks, settings):
    from registry.audit import SYSTEM_USERNAME
    from registry.celery import app
    from registry.tasks import quality_run_nightly_task

    app.conf.task_always_eager = True  # the worker itself is tested above
    try:
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            run_id = quality_run_nightly_task()
    finally:
        app.conf.task_always_eager = settings.CELERY_TASK_ALWAYS_EAGER
    assert len(callbacks) == 1
    run = QualityRun.objects.get(pk=run_id)
    assert run.site_ids == [] and run.requested_by.username == SYSTEM_USERNAME
    assert run.status == QualityRun.Status.DONE
    assert set(QualityResult.objects.filter(run=run).values_list("site_id", flat=True)) == {
        site_a.pk, site_b.pk}


def test_a_lost_run_does_not_block_new_requests(cohort, mona, site_a):
    from registry.services.quality import RUN_STALE_AFTER

    lost = quality_run_request(acting_user=mona)
    QualityRun.objects.filter(pk=lost.pk).update(
        status=QualityRun.Status.RUNNING, created_at=timezone.now() - RUN_STALE_AFTER * 2)
    fresh = quality_run_request(acting_user=mona)
    assert fresh.pk != lost.pk and fresh.status == QualityRun.Status.QUEUED
