"""Data requests: drafted, edited and submitted by their requester; organisations and
affiliations kept by the registry admin."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from registry.access import is_registry_admin
from registry.audit import audited_save
from registry.errors import ErrorCollector, NotPermitted, ValidationFailed
from registry.models import Site
from research import catalog
from research import limits as L
from research.criteria import criteria_clean
from research.models import Affiliation, DataRequest, Organisation, Purpose
from research.notify import committee, notify
from research.selectors.cohort import cohort_patients
from research.selectors.requests import may_request
from research.services.committee import recusals_record

EDITABLE_STATUSES = (DataRequest.Status.DRAFT, DataRequest.Status.REVISION)


def organisation_upsert(*, name: str, kind: str, site: Site | None = None,
                        acting_user: User | None) -> Organisation:
    """Create the organisation or bring its kind and site up to date (registry admin)."""
    if acting_user is not None and not is_registry_admin(acting_user):
        raise NotPermitted("Only the registry admin keeps organisations.")
    errors = ErrorCollector()
    name = (name or "").strip()
    if not name or len(name) > L.ORGANISATION_NAME_MAX_LENGTH:
        errors.add("name", f"A name of 1 to {L.ORGANISATION_NAME_MAX_LENGTH} characters.")
    if kind not in Organisation.Kind.values:
        errors.add("kind", f"Unknown kind; use one of {', '.join(Organisation.Kind.values)}.")
    errors.raise_if_any()
    with transaction.atomic():
        organisation = Organisation.objects.select_for_update().filter(name=name).first()
        if organisation is None:
            organisation = Organisation(name=name)
        elif organisation.kind == kind and organisation.site_id == (site.pk if site else None):
            return organisation
        organisation.kind, organisation.site = kind, site
        audited_save(organisation, acting_user=acting_user, reason="organisation kept")
    return organisation


def affiliation_set(*, user: User, organisation: Organisation, acting_user: User | None
                    ) -> Affiliation:
    """Record the organisation a person works for (registry admin)."""
    if acting_user is not None and not is_registry_admin(acting_user):
        raise NotPermitted("Only the registry admin records affiliations.")
    with transaction.atomic():
        affiliation = Affiliation.objects.select_for_update().filter(user=user).first()
        if affiliation is None:
            affiliation = Affiliation(user=user, organisation=organisation)
        elif affiliation.organisation_id == organisation.pk:
            return affiliation
        affiliation.organisation = organisation
        audited_save(affiliation, acting_user=acting_user,
                     reason=f"affiliated with {organisation.name}")
    return affiliation


def _text(errors: ErrorCollector, field: str, value: Any, limit: int, *, required: bool) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        errors.add(field, "Give text.")
        return ""
    value = value.strip()
    if len(value) > limit:
        errors.add(field, f"At most {limit:,} characters (this has {len(value):,}).")
    elif required and not value:
        errors.add(field, "This is required.")
    return value


def _variables(errors: ErrorCollector, value: Any) -> list[str]:
    if value in (None, ""):
        return []
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        errors.add("variables", "Give a list of variable names from the catalog.")
        return []
    known = catalog.by_name()
    names = list(dict.fromkeys(v.strip() for v in value))
    direct = [n for n in names if n in known and known[n].klass == catalog.DIRECT]
    unknown = [n[:60] for n in names if n not in known]
    if direct:
        errors.add("variables", "Direct identifiers are never released: "
                   f"{', '.join(direct)}.")
    if unknown:
        errors.add("variables", f"Not in the variable catalog: {', '.join(unknown[:10])}"
                   f"{' ...' if len(unknown) > 10 else ''}.")
    order = {v.name: i for i, v in enumerate(catalog.variables())}
    return sorted((n for n in names if n in known and n not in direct), key=order.__getitem__)


def _sites(errors: ErrorCollector, codes: Any) -> list[Site]:
    if codes in (None, ""):
        return []
    if not isinstance(codes, list | tuple) or not all(isinstance(c, str) for c in codes):
        errors.add("sites", "Give a list of site codes.")
        return []
    codes = list(dict.fromkeys(c.strip() for c in codes))
    sites = {s.code: s for s in Site.objects.filter(code__in=codes, is_active=True)}
    missing = [c[:40] for c in codes if c not in sites]
    if missing:
        errors.add("sites", f"Unknown or inactive sites: {', '.join(missing[:10])}.")
    return [sites[c] for c in codes if c in sites]


def _team(errors: ErrorCollector, usernames: Any, requester: User) -> list[User]:
    if usernames in (None, ""):
        return []
    if not isinstance(usernames, list | tuple) or not all(isinstance(u, str) for u in usernames):
        errors.add("team", "Give a list of user names.")
        return []
    names = [u.strip() for u in dict.fromkeys(usernames) if u.strip() != requester.username]
    if len(names) > L.TEAM_MAX:
        errors.add("team", f"At most {L.TEAM_MAX} team members.")
        return []
    users = {u.username: u for u in User.objects.filter(username__in=names, is_active=True)}
    missing = [n[:40] for n in names if n not in users]
    if missing:
        errors.add("team", f"Unknown people: {', '.join(missing[:10])}.")
    return [users[n] for n in names if n in users]


def _access_days(errors: ErrorCollector, value: Any) -> int:
    try:
        days = int(value)
    except (TypeError, ValueError, OverflowError):
        errors.add("access_days", "Give a number of days.")
        return 0
    if isinstance(value, bool) or not L.ACCESS_DAYS_MIN <= days <= L.ACCESS_DAYS_MAX:
        errors.add("access_days",
                   f"An access period of {L.ACCESS_DAYS_MIN} to {L.ACCESS_DAYS_MAX} days.")
    return days


def _apply(request: DataRequest, fields: dict, errors: ErrorCollector) -> dict:
    """Check the fields and set the plain ones on `request`; returns the sites and team."""
    request.title = _text(errors, "title", fields.get("title"), L.TITLE_MAX_LENGTH,
                          required=True)
    request.question = _text(errors, "question", fields.get("question"),
                             L.QUESTION_MAX_LENGTH, required=True)
    request.protocol_summary = _text(errors, "protocol_summary",
                                     fields.get("protocol_summary"), L.PROTOCOL_MAX_LENGTH,
                                     required=False)
    purpose = fields.get("purpose")
    if purpose not in Purpose.values:
        errors.add("purpose", f"Academic or commercial ({', '.join(Purpose.values)}).")
    else:
        request.purpose = purpose
    request.access_days = _access_days(errors, fields.get("access_days"))
    try:
        request.criteria = criteria_clean(fields.get("criteria"))
    except ValidationFailed as problem:
        for field, messages in problem.errors.items():
            for message in messages:
                errors.add(field if field != "__all__" else "criteria", message)
    request.variables = _variables(errors, fields.get("variables"))
    return {"sites": _sites(errors, fields.get("site_codes")),
            "team": _team(errors, fields.get("team"), request.requester)}


REQUEST_FIELDS = ("title", "question", "protocol_summary", "purpose", "access_days",
                  "criteria", "variables", "site_codes", "team")


@transaction.atomic
def request_create(*, acting_user: User, **fields: Any) -> DataRequest:
    """A new draft request of `acting_user` (an investigator or a partner). Fields:
    REQUEST_FIELDS; every problem is reported at once and nothing is saved."""
    if not may_request(acting_user):
        raise NotPermitted("Only investigators and partners make data requests.")
    unknown = sorted(set(fields) - set(REQUEST_FIELDS))
    if unknown:
        raise ValidationFailed(f"Unknown fields: {', '.join(unknown)}.")
    errors = ErrorCollector()
    request = DataRequest(requester=acting_user)
    related = _apply(request, fields, errors)
    errors.raise_if_any()
    audited_save(request, acting_user=acting_user, reason="request drafted")
    request.sites.set(related["sites"])
    request.team.set(related["team"])
    return request


@transaction.atomic
def request_update(*, request: DataRequest, acting_user: User, **fields: Any) -> DataRequest:
    """Change a draft, or a request the committee sent back for revision (requester only).
    Fields not given keep their value."""
    request = DataRequest.objects.select_for_update().get(pk=request.pk)
    if request.requester_id != acting_user.pk:
        raise NotPermitted("Only the requester edits a request.")
    if request.status not in EDITABLE_STATUSES:
        raise ValidationFailed(f"A request {request.get_status_display().lower()} cannot be "
                               "edited.")
    unknown = sorted(set(fields) - set(REQUEST_FIELDS))
    if unknown:
        raise ValidationFailed(f"Unknown fields: {', '.join(unknown)}.")
    current = {"title": request.title, "question": request.question,
               "protocol_summary": request.protocol_summary, "purpose": request.purpose,
               "access_days": request.access_days, "criteria": request.criteria,
               "variables": request.variables,
               "site_codes": list(request.sites.values_list("code", flat=True)),
               "team": list(request.team.values_list("username", flat=True))}
    current.update(fields)
    errors = ErrorCollector()
    related = _apply(request, current, errors)
    errors.raise_if_any()
    audited_save(request, acting_user=acting_user, reason="request edited")
    request.sites.set(related["sites"])
    request.team.set(related["team"])
    return request


@transaction.atomic
def request_submit(*, request: DataRequest, acting_user: User) -> DataRequest:
    """Send the request (a new revision) to the committee. Refused while it names no variable
    or no site, or its cohort is empty."""
    request = DataRequest.objects.select_for_update().get(pk=request.pk)
    if request.requester_id != acting_user.pk:
        raise NotPermitted("Only the requester submits a request.")
    if request.status not in EDITABLE_STATUSES:
        raise ValidationFailed(f"A request {request.get_status_display().lower()} cannot be "
                               "submitted.")
    errors = ErrorCollector()
    if not request.variables:
        errors.add("variables", "Choose at least one variable from the catalog.")
    site_ids = list(request.sites.filter(is_active=True).values_list("pk", flat=True))
    if not site_ids:
        errors.add("sites", "Ask at least one site.")
    elif not cohort_patients(criteria=request.criteria, purpose=request.purpose,
                             site_ids=site_ids).exists():
        errors.add("criteria", "No patient matches these criteria at these sites (with consent "
                   "for this purpose): the cohort is empty.")
    errors.raise_if_any()
    affiliation = Affiliation.objects.filter(user=acting_user).first()
    request.organisation = affiliation.organisation if affiliation else None
    request.status = DataRequest.Status.SUBMITTED
    request.revision += 1
    request.submitted_at = timezone.now()
    audited_save(request, acting_user=acting_user,
                 reason=f"submitted for review (revision {request.revision})")
    recusals_record(request=request)
    notify(committee(), f"{request.reference} submitted for review",
           f"{request.reference} \"{request.title}\" (revision {request.revision}) awaits the "
           "committee's votes.")
    return request
