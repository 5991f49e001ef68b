"""Who a data request's cohort holds: the patients of the asked sites whose consent covers the
purpose, who have not withdrawn, with a submitted (or later) record, matching the criteria.

Two forms of the one rule: `cohort_patients` (SQL, for the live feasibility count) and
`cohort_mask` (over the bulk reader's frames at the release's snapshot). A test keeps them
selecting the same patients.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd
from django.db.models import Exists, OuterRef, Q, QuerySet

from registry.models import Diagnosis, Patient, RecordStatus, TreatmentLine
from research.disclosure import Disclosed, disclose
from research.models import Purpose

# Records still in draft are not part of the registry's data yet.
RELEASED_STATUSES = (RecordStatus.SUBMITTED, RecordStatus.VERIFIED, RecordStatus.LOCKED)


def consent_scopes(purpose: str) -> tuple[str, ...]:
    """The consent scopes that cover a purpose."""
    if purpose == Purpose.COMMERCIAL:
        return (Patient.ConsentScope.COMMERCIAL,)
    return (Patient.ConsentScope.ACADEMIC, Patient.ConsentScope.COMMERCIAL)


def _diagnosis_q(criteria: dict) -> Q | None:
    q = Q()
    used = False
    if criteria.get("cancer"):
        codes = Q()
        for code in criteria["cancer"]:
            codes |= Q(cancer__code__startswith=code)
        q &= codes
        used = True
    if criteria.get("diagnosis_year_from") is not None:
        q &= Q(diagnosis_date__year__gte=criteria["diagnosis_year_from"])
        used = True
    if criteria.get("diagnosis_year_to") is not None:
        q &= Q(diagnosis_date__year__lte=criteria["diagnosis_year_to"])
        used = True
    if criteria.get("stage_groups"):
        q &= Q(stage_group__in=criteria["stage_groups"])
        used = True
    return q if used else None


def cohort_patients(*, criteria: dict, purpose: str, site_ids: Iterable[int]) -> QuerySet:
    site_ids = list(site_ids)
    patients = Patient.objects.filter(
        site_id__in=site_ids, withdrawn_date__isnull=True, status__in=RELEASED_STATUSES,
        consent_scope__in=consent_scopes(purpose))
    diagnosis = _diagnosis_q(criteria)
    if diagnosis is not None:
        patients = patients.filter(Exists(Diagnosis.objects.filter(
            diagnosis, patient=OuterRef("pk"), status__in=RELEASED_STATUSES)))
    if criteria.get("chemotherapy"):
        patients = patients.filter(Exists(TreatmentLine.objects.filter(
            patient=OuterRef("pk"), status__in=RELEASED_STATUSES)))
    return patients


def feasibility_count(*, criteria: dict, purpose: str, site_ids: Iterable[int]) -> Disclosed:
    """The cohort's size as it may be shown: under 11 hidden, the rest rounded to 5."""
    return disclose(cohort_patients(criteria=criteria, purpose=purpose,
                                    site_ids=site_ids).count())


def cohort_mask(*, patients: pd.DataFrame, diagnoses: pd.DataFrame, lines: pd.DataFrame,
                concept_codes: dict[int, str], criteria: dict, purpose: str,
                withdrawn: set[int]) -> pd.Series:
    """Which rows of `patients` (bulk reader frame of kind patient) are in the cohort.
    `diagnoses` and `lines` are the same snapshot's frames; `concept_codes` maps concept ids to
    codes; `withdrawn` holds the ids of patients withdrawn now (a withdrawal made after the
    snapshot still removes the patient)."""
    released = set(RELEASED_STATUSES)
    mask = (patients["status"].isin(released)
            & patients["withdrawn_date"].isna()
            & ~patients["id"].isin(withdrawn)
            & patients["consent_scope"].isin(consent_scopes(purpose)))
    d = diagnoses[diagnoses["status"].isin(released)]
    used = False
    keep = pd.Series(True, index=d.index)
    if criteria.get("cancer"):
        codes = d["cancer_id"].map(lambda c: concept_codes.get(int(c), "") if pd.notna(c) else "")
        keep &= codes.map(lambda c: any(c.startswith(p) for p in criteria["cancer"]))
        used = True
    years = d["diagnosis_date"].dt.year
    if criteria.get("diagnosis_year_from") is not None:
        keep &= years >= criteria["diagnosis_year_from"]
        used = True
    if criteria.get("diagnosis_year_to") is not None:
        keep &= years <= criteria["diagnosis_year_to"]
        used = True
    if criteria.get("stage_groups"):
        keep &= d["stage_group"].isin(criteria["stage_groups"])
        used = True
    if used:
        mask &= patients["id"].isin(set(d.loc[keep.fillna(False), "patient_id"].dropna()))
    if criteria.get("chemotherapy"):
        treated = lines.loc[lines["status"].isin(released), "patient_id"].dropna()
        mask &= patients["id"].isin(set(treated))
    return mask.fillna(False).astype(bool)


def request_feasibility(request) -> Disclosed:
    """The size of a data request's cohort (its criteria, purpose and active sites) as it may
    be shown."""
    return feasibility_count(
        criteria=request.criteria, purpose=request.purpose,
        site_ids=request.sites.filter(is_active=True).values_list("pk", flat=True))
