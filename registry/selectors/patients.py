"""Reads for the clerk and monitor pages, scoped through registry.access, with bounded queries."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Exists, OuterRef, Prefetch, Q, QuerySet
from django.utils import timezone

from registry import access
from registry.models import (
    AdverseEvent,
    Cycle,
    DataQuery,
    Diagnosis,
    DrugAdministration,
    FollowUp,
    LabResult,
    Patient,
    RecordStatus,
    TreatmentLine,
)
from registry.pseudonyms import hospital_number_hashes


def patient_search(user, *, q: str = "", cancer: str = "", status: str = "",
                   department: str = "", site: str = "") -> QuerySet[Patient]:
    """The user's patients, searched by registry id or hospital number (matched through the
    keyed hash at each of the user's sites), filtered by cancer code, status, department."""
    patients = access.patients_visible(user).select_related("site", "department")
    q = (q or "").strip()
    if q:
        codes = access.sites_visible(user).values_list("code", flat=True)
        hashes = [h for code in codes for h in hospital_number_hashes(code, q)]
        patients = patients.filter(Q(registry_id=q.upper()) | Q(hospital_number_hash__in=hashes))
    if cancer:
        # A semi-join (no DISTINCT), so the page is read in index order and stops at its end.
        # Scoped like the patients, so only the user's sites' diagnoses are read.
        patients = patients.filter(Exists(access.diagnoses_visible(user).filter(
            Q(cancer__code=cancer) | Q(cancer__code__startswith=cancer + "."),
            patient=OuterRef("pk"))))
    if status:
        patients = patients.filter(status=status)
    if department:
        patients = patients.filter(department_id=department)
    if site:
        patients = patients.filter(site__code=site)
    return patients.order_by("-updated_at", "-id")


@dataclass
class WorkQueue:
    drafts: QuerySet
    open_queries: QuerySet
    due_followup: QuerySet
    recent: QuerySet
    to_review: QuerySet
    counts: dict


def work_queue(user, *, limit: int = 10) -> WorkQueue:
    patients = access.patients_visible(user)
    queries = access.queries_visible(user).filter(
        status__in=[DataQuery.Status.OPEN, DataQuery.Status.ANSWERED]).select_related("patient")
    # Due for follow-up: alive at the last visit, which was more than 90 days ago.
    cutoff = timezone.localdate() - timezone.timedelta(days=90)
    # The derived columns kept by followup_summary_refresh make this one index range scan.
    due = patients.filter(followup_closed=False, withdrawn_date__isnull=True,
                          last_followup_date__isnull=False, last_followup_date__lt=cutoff)
    drafts = patients.filter(status=RecordStatus.DRAFT)
    to_review = patients.filter(status=RecordStatus.SUBMITTED)
    recent = patients.select_related("site").order_by("-updated_at")
    return WorkQueue(
        drafts=drafts.select_related("site").order_by("-updated_at")[:limit],
        open_queries=queries.order_by("-opened_at")[:limit],
        due_followup=due.select_related("site").order_by("last_followup_date", "id")[:limit],
        recent=recent[:limit],
        to_review=to_review.select_related("site").order_by("updated_at")[:limit],
        counts={"drafts": drafts.count(), "queries": queries.count(),
                "due": due.count(), "to_review": to_review.count()},
    )


def patient_chart(user, registry_id: str) -> Patient:
    """One patient with everything the chart shows, in a fixed number of queries."""
    patient = access.access_patient_by_registry_id(user, registry_id)
    drugs = DrugAdministration.objects.select_related("drug", "drug_term").order_by("day", "id")
    cycles = Cycle.objects.prefetch_related(Prefetch("drugs", queryset=drugs)).order_by(
        "cycle_no")
    lines = TreatmentLine.objects.select_related("regimen", "regimen_term").prefetch_related(
        Prefetch("cycles", queryset=cycles)).order_by("line_no")
    return Patient.objects.prefetch_related(
        Prefetch("diagnoses", queryset=Diagnosis.objects.select_related("cancer", "cancer_term")),
        Prefetch("lines", queryset=lines),
        Prefetch("adverse_events", queryset=AdverseEvent.objects.select_related(
            "ae", "ae_term", "cycle__line").order_by("onset_date")),
        Prefetch("labs", queryset=LabResult.objects.select_related(
            "lab", "test_term", "unit_term", "canonical_unit").order_by("collected_date", "id")),
        Prefetch("followups", queryset=FollowUp.objects.order_by("followup_date")),
        Prefetch("queries", queryset=DataQuery.objects.order_by("-opened_at")),
    ).select_related("site", "department").get(pk=patient.pk)
