"""Who may see which rows: the site-scoping rule, written once.

Every query for a site-owned object goes through this module. A row of a site the acting
user does not belong to does not exist for them: selectors leave it out and the `access_*`
helpers raise Http404, never a 403 that would confirm it exists. Registry admins see all.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib.auth.models import AnonymousUser, User
from django.db.models import Model, Q, QuerySet
from django.http import Http404

from registry.kinds import CLINICAL_MODELS
from registry.models import (
    AdverseEvent,
    Cycle,
    DataQuery,
    Department,
    Diagnosis,
    DrugAdministration,
    FollowUp,
    ImportBatch,
    LabResult,
    Membership,
    Patient,
    Role,
    Site,
    SiteTerm,
    TermMapping,
    TreatmentLine,
)

# Models that carry their site directly; anything else is reached through one of these.
SITE_OWNED_MODELS: tuple[type[Model], ...] = (*CLINICAL_MODELS, SiteTerm, DataQuery, ImportBatch)

AnyUser = User | AnonymousUser


def is_registry_admin(user: AnyUser) -> bool:
    if not user.is_authenticated or not user.is_active:
        return False
    if user.is_superuser:
        return True
    return _active_memberships(user).filter(role=Role.ADMIN).exists()


def _active_memberships(user: AnyUser) -> QuerySet[Membership]:
    return Membership.objects.filter(user=user, is_active=True)


def user_roles(user: AnyUser) -> set[str]:
    if not user.is_authenticated:
        return set()
    roles = set(_active_memberships(user).values_list("role", flat=True))
    if user.is_superuser:
        roles.add(Role.ADMIN.value)
    return roles


def site_ids_for(user: AnyUser, roles: Iterable[str] | None = None) -> list[int] | None:
    """The ids of the sites whose rows the user may see; None means every site (admin)."""
    if is_registry_admin(user):
        return None
    if not user.is_authenticated or not user.is_active:
        return []
    memberships = _active_memberships(user).filter(site__isnull=False, site__is_active=True)
    if roles is not None:
        memberships = memberships.filter(role__in=list(roles))
    return sorted(set(memberships.values_list("site_id", flat=True)))


def scope(queryset: QuerySet, user: AnyUser, *, roles: Iterable[str] | None = None) -> QuerySet:
    """Restrict a queryset of a site-owned model (or Site itself) to the user's sites."""
    ids = site_ids_for(user, roles)
    if ids is None:
        return queryset
    model = queryset.model
    if model is Site:
        return queryset.filter(pk__in=ids)
    if model is TermMapping:
        return queryset.filter(site_term__site_id__in=ids)
    if model is Membership:
        return queryset.filter(site_id__in=ids)
    if model not in SITE_OWNED_MODELS:
        raise TypeError(f"{model.__name__} is not site-owned; scope it through its parent")
    return queryset.filter(site_id__in=ids)


# Where a row of each site-bound model keeps its site, as a lookup that also works on the
# model's historical rows (a historical row carries the site the row had at that time).
_SITE_LOOKUPS: dict[type[Model], str] = {
    **{model: "site_id" for model in SITE_OWNED_MODELS},
    Site: "id",
    TermMapping: "site_term__site_id",
    Department: "site_id",
    Membership: "site_id",
}


def site_lookup(model: type[Model]) -> str | None:
    """The lookup from a row of `model` to its site id; None for registry-wide reference data."""
    return _SITE_LOOKUPS.get(model)


def scope_history(queryset: QuerySet, user: AnyUser) -> QuerySet:
    """Restrict historical rows (django-simple-history) to those recorded at the user's sites.

    A row's history is scoped like the row: another site's past versions do not exist for the
    user, even of a row since deleted. Histories of registry-wide reference data are left whole;
    a membership's history follows memberships_visible (the user's own, and their sites').
    """
    ids = site_ids_for(user)
    if ids is None:
        return queryset
    model = queryset.model.instance_type
    lookup = site_lookup(model)
    if lookup is None:
        return queryset
    condition = Q(**{f"{lookup}__in": ids})
    if model is Membership:
        condition |= Q(user_id=user.pk)
    return queryset.filter(condition)


def _get_or_404(queryset: QuerySet, **lookup) -> Model:
    try:
        return queryset.get(**lookup)
    except queryset.model.DoesNotExist:
        raise Http404(f"No {queryset.model._meta.verbose_name} matches the given query.") from None


# Selectors: the rows of one kind that the user may see.

def sites_visible(user: AnyUser) -> QuerySet[Site]:
    return scope(Site.objects.all(), user)


def patients_visible(user: AnyUser) -> QuerySet[Patient]:
    return scope(Patient.objects.all(), user)


def diagnoses_visible(user: AnyUser) -> QuerySet[Diagnosis]:
    return scope(Diagnosis.objects.all(), user)


def lines_visible(user: AnyUser) -> QuerySet[TreatmentLine]:
    return scope(TreatmentLine.objects.all(), user)


def cycles_visible(user: AnyUser) -> QuerySet[Cycle]:
    return scope(Cycle.objects.all(), user)


def drugs_visible(user: AnyUser) -> QuerySet[DrugAdministration]:
    return scope(DrugAdministration.objects.all(), user)


def adverse_events_visible(user: AnyUser) -> QuerySet[AdverseEvent]:
    return scope(AdverseEvent.objects.all(), user)


def labs_visible(user: AnyUser) -> QuerySet[LabResult]:
    return scope(LabResult.objects.all(), user)


def followups_visible(user: AnyUser) -> QuerySet[FollowUp]:
    return scope(FollowUp.objects.all(), user)


def site_terms_visible(user: AnyUser) -> QuerySet[SiteTerm]:
    return scope(SiteTerm.objects.all(), user)


def mappings_visible(user: AnyUser) -> QuerySet[TermMapping]:
    return scope(TermMapping.objects.all(), user)


def queries_visible(user: AnyUser) -> QuerySet[DataQuery]:
    return scope(DataQuery.objects.all(), user)


def imports_visible(user: AnyUser, roles: Iterable[str] | None = None) -> QuerySet[ImportBatch]:
    return scope(ImportBatch.objects.all(), user, roles=roles)


def departments_visible(user: AnyUser) -> QuerySet[Department]:
    ids = site_ids_for(user)
    queryset = Department.objects.all()
    return queryset if ids is None else queryset.filter(site_id__in=ids)


def memberships_visible(user: AnyUser) -> QuerySet[Membership]:
    """Admins see every membership; others see their own and their sites' colleagues."""
    ids = site_ids_for(user)
    if ids is None:
        return Membership.objects.all()
    return Membership.objects.filter(site_id__in=ids) | Membership.objects.filter(user=user)


# Every selector of a site-owned kind, for the property test and the admin.
SELECTORS = {
    Site: sites_visible,
    Patient: patients_visible,
    Diagnosis: diagnoses_visible,
    TreatmentLine: lines_visible,
    Cycle: cycles_visible,
    DrugAdministration: drugs_visible,
    AdverseEvent: adverse_events_visible,
    LabResult: labs_visible,
    FollowUp: followups_visible,
    SiteTerm: site_terms_visible,
    TermMapping: mappings_visible,
    DataQuery: queries_visible,
    ImportBatch: imports_visible,
}


# access_* helpers: one row, with the permission check built in.

def access_site_by_code(user: AnyUser, code: str) -> Site:
    return _get_or_404(sites_visible(user), code=code)


def access_patient_by_registry_id(user: AnyUser, registry_id: str) -> Patient:
    return _get_or_404(patients_visible(user).select_related("site", "department"),
                       registry_id=registry_id)


def access_site_for_role(user: AnyUser, code: str, roles: Iterable[str]) -> Site:
    """The site, if the user holds one of `roles` there (or is an admin); else 404."""
    return _get_or_404(scope(Site.objects.all(), user, roles=roles), code=code)
