"""Releases from request to download: what a release holds, by construction, and what it
never holds; downloads and expiry; rebuilds; a survival estimate on a release equals the one
on the source rows."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from django.http import Http404
from django.utils import timezone

from registry.errors import NotPermitted, ValidationFailed
from registry.models import AdverseEvent, Cycle, FollowUp, Patient
from registry.services import clinical, workflow
from registry.services.clinical import patient_withdraw
from research.models import Download, Release
from research.selectors.cohort import cohort_mask, cohort_patients
from research.services.committee import decision_record, participation_answer, vote_cast
from research.services.releases import (
    release_build,
    release_download,
    release_request,
    release_verify,
    releases_expire,
)
from research.services.requests import request_create, request_submit
from tests.research.conftest import submitted_patient

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

CLINICAL = ["diagnosis.diagnosis_date", "diagnosis.cancer", "diagnosis.stage_group",
            "treatmentline.line_no", "treatmentline.start_date", "cycle.cycle_no",
            "cycle.start_date", "adverseevent.ae", "adverseevent.grade",
            "adverseevent.onset_date", "followup.followup_date", "followup.vital_status"]
QUASI = ["patient.sex", "patient.age_at_diagnosis", "patient.site"]


def approve(ivan, carol, cleo, chad, *, purpose="academic", variables=None, criteria=None,
            sites=("SITE-A", "SITE-B"), quasi=(), k=2):
    request = request_create(
        acting_user=ivan, title="Survival after platinum", question="How long?",
        protocol_summary="", purpose=purpose, access_days=90,
        criteria=criteria if criteria is not None else {"cancer": ["C34"]},
        variables=variables or CLINICAL + QUASI, site_codes=list(sites), team=[])
    request_submit(request=request, acting_user=ivan)
    vote_cast(request=request, acting_user=carol, choice="approve")
    vote_cast(request=request, acting_user=cleo, choice="approve")
    decision_record(request=request, acting_user=chad, approved_quasi_identifiers=list(quasi),
                    k_anonymity=k)
    request.refresh_from_db()
    return request


def opt(request, pi, answer="opted_in"):
    site_ids = {m.site_id for m in pi.memberships.all()}
    for participation in request.participations.filter(site_id__in=site_ids):
        participation_answer(participation=participation, acting_user=pi, answer=answer)


def tables(release: Release, folder: Path) -> dict[str, pd.DataFrame]:
    """The release's CSV tables read back with pandas."""
    with zipfile.ZipFile(folder / "data-csv.zip") as archive:
        return {Path(n).stem: pd.read_csv(io.BytesIO(archive.read(n)), dtype=str,
                                          keep_default_na=False)
                for n in archive.namelist()}


def folder_of(release: Release, release_dir) -> Path:
    return Path(release_dir) / str(release.pk)


@pytest.fixture
def people(ivan, carol, cleo, chad, priya, sam, committee_rules):
    return {"ivan": ivan, "carol": carol, "cleo": cleo, "chad": chad, "priya": priya,
            "sam": sam}


@pytest.fixture
def cohort(site_a, site_b, alice, bob):
    """Eleven patients at A and B: lung cancers (one with a later second lung diagnosis),
    one breast cancer, one with commercial consent, one with a draft record only, one
    followed up to death, one over 90."""
    made = {
        "a1": submitted_patient(site_a, alice, birth_year=1950, sex="M"),
        "a2": submitted_patient(site_a, alice, birth_year=1955, sex="F",
                                diagnosed=dt.date(2020, 6, 1)),
        "a3": submitted_patient(site_a, alice, birth_year=1925, sex="F", consent="commercial"),
        "a4": submitted_patient(site_a, alice, cancer="C50", birth_year=1970),
        "b1": submitted_patient(site_b, bob, birth_year=1960, sex="M"),
        "b2": submitted_patient(site_b, bob, birth_year=1962, sex="M", stage="III"),
        "b3": submitted_patient(site_b, bob, birth_year=1961, sex="F", treated=False),
    }
    # A draft patient is not part of the registry's data yet.
    from tests.registry.factories import patient
    made["draft"] = patient(site_a, alice, birth_year=1950)
    clinical.diagnosis_record(patient=made["draft"], diagnosis_date=dt.date(2021, 1, 1),
                              cancer="C34", acting_user=alice)
    # Follow-ups: a1 dies, b1 is alive at day 400.
    for key, days, status in [("a1", 200, "dead"), ("b1", 400, "alive"), ("a2", 300, "alive")]:
        p = made[key]
        followup = clinical.followup_record(
            patient=p, followup_date=p.diagnoses.first().diagnosis_date + dt.timedelta(days),
            vital_status=status, cause_of_death="cancer" if status == "dead" else "",
            acting_user=alice if p.site_id == site_a.pk else bob)
        workflow.record_submit(followup, acting_user=alice if p.site_id == site_a.pk else bob)
    # An adverse event on a1's cycle.
    cycle = Cycle.objects.get(patient=made["a1"])
    ae = clinical.adverse_event_record(patient=made["a1"], term="Nausea", grade=3,
                                       onset_date=cycle.start_date + dt.timedelta(days=2),
                                       cycle=cycle, acting_user=alice)
    workflow.record_submit(ae, acting_user=alice)
    return made


def build(request, ivan) -> Release:
    release = release_request(request=request, acting_user=ivan)
    return release_build(release_id=release.pk)


def test_a_release_holds_exactly_the_approved_cohort_and_variables(people, cohort,
                                                                    release_dir):
    request = approve(people["ivan"], people["carol"], people["cleo"], people["chad"],
                      quasi=["patient.sex"])
    opt(request, people["priya"])
    opt(request, people["sam"])
    release = build(request, people["ivan"])
    assert release.status == Release.Status.READY
    data = tables(release, folder_of(release, release_dir))
    expected = {cohort[k].pk for k in ("a1", "a2", "a3", "b1", "b2", "b3")}
    assert release.patients == len(expected) == len(data["patients"])
    # Only the approved quasi-identifier: sex, not age or site.
    assert list(data["patients"].columns) == ["study_id", "sex"]
    assert set(data) == {"patients", "diagnoses", "regimens", "cycles", "adverse_events",
                         "followups"}
    assert "registry_id" not in "".join(c for t in data.values() for c in t.columns)
    # Dates are days from the first diagnosis: each first diagnosis is day 0.
    assert set(data["diagnoses"]["diagnosis_date_day"]) == {"0"}
    assert set(data["regimens"]["start_date_day"]) == {"10"}
    # No registry pseudonym or source id anywhere in the files.
    registry_ids = set(Patient.objects.values_list("registry_id", flat=True))
    for table in data.values():
        assert not registry_ids & set(table.to_numpy().ravel())
    # The manifest proves every file.
    folder = folder_of(release, release_dir)
    for entry in release.manifest["files"]:
        assert hashlib.sha256((folder / entry["name"]).read_bytes()).hexdigest() == \
            entry["sha256"]
    assert release.manifest["tables"]["patients"] == release.patients
    # Parquet holds the same rows as the CSV.
    parquet = pd.read_parquet(folder / "cycles.parquet")
    assert len(parquet) == len(data["cycles"]) == Cycle.objects.filter(
        patient__in=expected).count()


def test_declined_sites_and_consent_outside_the_purpose_are_absent(people, cohort,
                                                                   release_dir):
    request = approve(people["ivan"], people["carol"], people["cleo"], people["chad"],
                      purpose="commercial")
    opt(request, people["priya"])
    opt(request, people["sam"], "declined")
    release = build(request, people["ivan"])
    # Commercial purpose: only a3 (commercial consent at site A); B declined.
    assert release.patients == 1
    readme = (folder_of(release, release_dir) / "README.md").read_text()
    assert "Sites that declined: SITE-B" in readme


def test_a_withdrawn_patient_is_absent_from_every_later_release(people, cohort, release_dir,
                                                                alice):
    request = approve(people["ivan"], people["carol"], people["cleo"], people["chad"])
    opt(request, people["priya"])
    first = build(request, people["ivan"])
    patient_withdraw(patient=cohort["a1"], withdrawn_date=timezone.localdate(),
                     acting_user=alice, reason="patient asked")
    second = build(request, people["ivan"])
    assert second.patients == first.patients - 1
    # A rebuild of the first release now leaves the patient out too.
    assert not release_verify(release=first)


def test_a_rebuild_gives_byte_identical_files(people, cohort, release_dir, bob):
    request = approve(people["ivan"], people["carol"], people["cleo"], people["chad"],
                      quasi=["patient.sex", "patient.age_at_diagnosis"])
    opt(request, people["priya"])
    opt(request, people["sam"])
    release = build(request, people["ivan"])
    # Later edits do not change the snapshot the release reads.
    event = clinical.adverse_event_record(patient=cohort["b1"], term="Vomiting", grade=2,
                                          onset_date=dt.date(2021, 4, 1), acting_user=bob)
    workflow.record_submit(event, acting_user=bob)
    assert release_verify(release=release)
    before = {f.name: f.sha256 for f in release.files.all()}
    rebuilt = release_build(release_id=release.pk)
    assert {f.name: f.sha256 for f in rebuilt.files.all()} == before


def test_two_releases_cannot_be_joined_on_pseudonyms(people, cohort, release_dir):
    request = approve(people["ivan"], people["carol"], people["cleo"], people["chad"])
    opt(request, people["priya"])
    first = build(request, people["ivan"])
    second = build(request, people["ivan"])
    a = set(tables(first, folder_of(first, release_dir))["patients"]["study_id"])
    b = set(tables(second, folder_of(second, release_dir))["patients"]["study_id"])
    assert len(a) == len(b) == first.patients and not a & b


def test_ages_90_and_over_are_grouped_and_k_anonymity_is_reported(people, cohort,
                                                                 release_dir):
    request = approve(people["ivan"], people["carol"], people["cleo"], people["chad"],
                      quasi=["patient.age_at_diagnosis", "patient.sex"], k=2)
    opt(request, people["priya"])
    opt(request, people["sam"])
    release = build(request, people["ivan"])
    patients = tables(release, folder_of(release, release_dir))["patients"]
    ages = [a for a in patients["age_at_diagnosis"] if a not in ("", "*")]
    assert all(not a.isdigit() or int(a) < 90 for a in ages)
    report = release.k_report
    assert report["k"] == 2 and report["rows"] == release.patients
    combos = patients.groupby(["age_at_diagnosis", "sex"]).size()
    suppressed = combos.get(("*", "*"), 0)
    assert all(n >= 2 for key, n in combos.items() if key != ("*", "*"))
    assert suppressed == report["suppressed_records"]


def test_a_survival_estimate_on_the_release_equals_the_source(people, cohort, release_dir):
    request = approve(people["ivan"], people["carol"], people["cleo"], people["chad"])
    opt(request, people["priya"])
    opt(request, people["sam"])
    release = build(request, people["ivan"])
    data = tables(release, folder_of(release, release_dir))
    follow = data["followups"].assign(day=lambda f: f["followup_date_day"].astype(int))
    last = follow.groupby("study_id").agg(day=("day", "max"),
                                          dead=("vital_status", lambda s: (s == "dead").any()))
    released = kaplan_meier(last["day"].to_numpy(), last["dead"].to_numpy())
    # The same from the source rows.
    source = []
    for p in Patient.objects.filter(pk__in=[cohort[k].pk for k in ("a1", "a2", "a3", "b1",
                                                                    "b2", "b3")]):
        rows = list(FollowUp.objects.filter(patient=p))
        if not rows:
            continue
        first = min(d.diagnosis_date for d in p.diagnoses.all())
        source.append((max((r.followup_date - first).days for r in rows),
                       any(r.vital_status == "dead" for r in rows)))
    days, dead = map(np.array, zip(*source, strict=True))
    assert released == kaplan_meier(days, dead)


def kaplan_meier(days: np.ndarray, dead: np.ndarray) -> list[tuple[int, float]]:
    survival, out = 1.0, []
    for t in sorted(set(days[dead.astype(bool)])):
        at_risk = (days >= t).sum()
        events = ((days == t) & dead.astype(bool)).sum()
        survival *= 1 - events / at_risk
        out.append((int(t), round(float(survival), 12)))
    return out


def test_releases_are_refused_before_approval_and_without_sites(people, cohort):
    ivan = people["ivan"]
    request = request_create(acting_user=ivan, title="t", question="q", purpose="academic",
                             access_days=90, variables=CLINICAL, site_codes=["SITE-A"])
    with pytest.raises(ValidationFailed, match="not approved"):
        release_request(request=request, acting_user=ivan)
    approved = approve(ivan, people["carol"], people["cleo"], people["chad"])
    with pytest.raises(ValidationFailed, match="opted in"):
        release_request(request=approved, acting_user=ivan)
    opt(approved, people["priya"])
    with pytest.raises(NotPermitted):
        release_request(request=approved, acting_user=people["carol"])
    assert not Release.objects.exists()


def test_downloads_are_for_the_team_within_the_access_period(people, cohort, release_dir):
    ivan = people["ivan"]
    request = approve(ivan, people["carol"], people["cleo"], people["chad"])
    opt(request, people["priya"])
    release = build(request, ivan)
    path, file = release_download(release=release, name="codebook.csv", acting_user=ivan,
                                  channel="web")
    assert path.read_bytes() and Download.objects.get().file == file
    for outsider in (people["carol"], people["priya"]):
        with pytest.raises(Http404):
            release_download(release=release, name="codebook.csv", acting_user=outsider,
                             channel="web")
    for tampered in ("../manifest.json", "codebook.csv\x00", "x" * 10_000, "manifest.json/.."):
        with pytest.raises(Http404):
            release_download(release=release, name=tampered, acting_user=ivan, channel="api")
    assert Download.objects.count() == 1
    # The access period ends: the hourly task closes the release and deletes its files.
    assert releases_expire(now=release.expires_at + dt.timedelta(seconds=1)) == 1
    release.refresh_from_db()
    assert release.status == Release.Status.EXPIRED
    assert not folder_of(release, release_dir).exists()
    with pytest.raises(ValidationFailed, match="ended"):
        release_download(release=release, name="codebook.csv", acting_user=ivan,
                         channel="web")
    with pytest.raises(ValidationFailed, match="ended"):
        _expire_request(request, ivan)


def _expire_request(request, ivan):
    decision = request.decisions.get()
    decision.access_until = timezone.localdate() - dt.timedelta(days=1)
    decision.save()
    return release_request(request=request, acting_user=ivan)


def test_the_sql_cohort_and_the_release_cohort_agree(people, cohort):
    """The live feasibility count and the release select the same patients."""
    from registry.models import Concept, Diagnosis, TreatmentLine
    from registry.selectors.bulk import records_frame

    site_ids = [cohort["a1"].site_id, cohort["b1"].site_id]
    patients = records_frame("patient", sites=site_ids)
    diagnoses = records_frame("diagnosis", sites=site_ids)
    lines = records_frame("treatmentline", sites=site_ids)
    codes = dict(Concept.objects.values_list("pk", "code"))
    assert Diagnosis.objects.exists() and TreatmentLine.objects.exists()
    for criteria in [{}, {"cancer": ["C34"]}, {"cancer": ["C5"]}, {"stage_groups": ["III"]},
                     {"chemotherapy": True}, {"diagnosis_year_from": 2021},
                     {"diagnosis_year_to": 2020, "cancer": ["C34"]}]:
        for purpose in ("academic", "commercial"):
            sql = set(cohort_patients(criteria=criteria, purpose=purpose, site_ids=site_ids)
                      .values_list("pk", flat=True))
            mask = cohort_mask(patients=patients, diagnoses=diagnoses, lines=lines,
                               concept_codes=codes, criteria=criteria, purpose=purpose,
                               withdrawn=set())
            assert set(patients.loc[mask, "id"]) == sql, (criteria, purpose)


def test_adverse_events_keep_their_cycle_reference(people, cohort, release_dir):
    request = approve(people["ivan"], people["carol"], people["cleo"], people["chad"])
    opt(request, people["priya"])
    release = build(request, people["ivan"])
    data = tables(release, folder_of(release, release_dir))
    events = data["adverse_events"]
    assert len(events) == AdverseEvent.objects.filter(patient=cohort["a1"]).count() == 1
    assert events.loc[0, "cycle_ref"] in set(data["cycles"]["cycle_ref"])
    assert events.loc[0, "ae"] and events.loc[0, "grade"] == "3"


@pytest.mark.django_db(transaction=True)
def test_a_release_is_built_outside_a_test_transaction(vocabulary, people, cohort, release_dir,
                                                        django_capture_on_commit_callbacks):
    """As the worker builds it: committed data, the next chunk read ahead by a thread of its
    own, the release requested through the service (its task runs eagerly on commit)."""
    request = approve(people["ivan"], people["carol"], people["cleo"], people["chad"])
    opt(request, people["priya"])
    opt(request, people["sam"])
    with django_capture_on_commit_callbacks(execute=True):
        release = release_request(request=request, acting_user=people["ivan"])
    release.refresh_from_db()
    assert release.status == Release.Status.READY
    # The lung cancers (academic purpose: commercial consent covers it too).
    assert release.patients == 6
    data = tables(release, folder_of(release, release_dir))
    assert len(data["cycles"]) == Cycle.objects.filter(
        patient__in=[cohort[k].pk for k in ("a1", "a2", "a3", "b1", "b2")]).count()
    assert release.history.filter(history_change_reason="release built").exists()


def test_release_verify_command_reports_identical_then_a_difference(people, cohort,
                                                                    release_dir, alice):
    from io import StringIO

    from django.core.management import CommandError, call_command

    request = approve(people["ivan"], people["carol"], people["cleo"], people["chad"])
    opt(request, people["priya"])
    release = build(request, people["ivan"])
    out = StringIO()
    call_command("release_verify", str(release.pk), stdout=out)
    assert "byte-identical" in out.getvalue()
    patient_withdraw(patient=cohort["a2"], withdrawn_date=timezone.localdate(),
                     acting_user=alice, reason="patient asked")
    with pytest.raises(CommandError, match="differs"):
        call_command("release_verify", str(release.pk))
    with pytest.raises(CommandError, match="No release"):
        call_command("release_verify", "999999")


def test_a_failed_build_is_recorded_and_the_task_does_not_raise(people, cohort, release_dir,
                                                              monkeypatch):
    from research import tasks
    from research.services import releases

    request = approve(people["ivan"], people["carol"], people["cleo"], people["chad"])
    opt(request, people["priya"])
    release = release_request(request=request, acting_user=people["ivan"])

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(releases, "_build_into", broken)
    assert tasks.release_build_task(release.pk) == Release.Status.FAILED
    release.refresh_from_db()
    assert release.status == Release.Status.FAILED and "disk full" in release.error
    assert not folder_of(release, release_dir).exists()
    # The team may ask again: a failed build does not block the next.
    monkeypatch.undo()
    again = release_request(request=request, acting_user=people["ivan"])
    assert again.number == release.number + 1


def test_released_cycles_equal_the_source_rows_after_the_documented_transformations(
        people, cohort, release_dir):
    from research.release.deid import pseudonyms

    request = approve(people["ivan"], people["carol"], people["cleo"], people["chad"])
    opt(request, people["priya"])
    opt(request, people["sam"])
    release = build(request, people["ivan"])
    released = tables(release, folder_of(release, release_dir))["cycles"][
        ["study_id", "cycle_no", "start_date_day"]]
    members = Patient.objects.filter(pk__in=[cohort[k].pk for k in ("a1", "a2", "a3", "b1",
                                                                     "b2", "b3")])
    study = dict(zip(members.values_list("pk", flat=True),
                     pseudonyms(pd.Series([str(p.pk) for p in members]),
                                bytes.fromhex(release.key)), strict=True))
    first = {p.pk: min(d.diagnosis_date for d in p.diagnoses.all()) for p in members}
    expected = pd.DataFrame(
        [(study[c.patient_id], str(c.cycle_no), str((c.start_date - first[c.patient_id]).days))
         for c in Cycle.objects.filter(patient__in=members)],
        columns=["study_id", "cycle_no", "start_date_day"])
    order = ["study_id", "cycle_no"]
    pd.testing.assert_frame_equal(released.sort_values(order).reset_index(drop=True),
                                  expected.sort_values(order).reset_index(drop=True))
