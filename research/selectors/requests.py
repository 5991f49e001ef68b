"""Who sees which data request, release and site question (one place, like registry.access).

- the requester and the request's team: their own requests (drafts included) and releases;
- committee members and the chair: every submitted request (never another person's draft);
- a site PI: the approved requests that asked their site (to answer), nothing else;
- a partner (on top of the above): releases only of approved commercial requests of their own
  organisation (Affiliation) on which they are the requester or in the team
  (partner_releases_q), the same on the web and the API;
- the registry admin: everything.
A request someone may not see is a 404, never a 403 that confirms it exists.
"""

from __future__ import annotations

from django.db.models import Q, QuerySet
from django.http import Http404

from registry.access import AnyUser, is_registry_admin, site_ids_for, user_roles
from registry.models import Role
from research.models import (
    APPROVED_STATUSES,
    Affiliation,
    DataRequest,
    Purpose,
    Release,
    SiteParticipation,
)

COMMITTEE_ROLES = (Role.COMMITTEE, Role.CHAIR)
REQUESTER_ROLES = (Role.INVESTIGATOR, Role.PARTNER)


def is_committee(user: AnyUser) -> bool:
    return bool(user_roles(user) & {r.value for r in COMMITTEE_ROLES})


def is_chair(user: AnyUser) -> bool:
    return Role.CHAIR.value in user_roles(user)


def may_request(user: AnyUser) -> bool:
    return bool(user_roles(user) & {r.value for r in REQUESTER_ROLES})


def pi_site_ids(user: AnyUser) -> list[int]:
    if not user.is_authenticated:
        return []
    return site_ids_for(user, roles=[Role.SITE_PI]) or []


def requests_visible(user: AnyUser) -> QuerySet[DataRequest]:
    requests = DataRequest.objects.all()
    if is_registry_admin(user):
        return requests
    if not user.is_authenticated or not user.is_active:
        return requests.none()
    own = Q(requester=user) | Q(team=user)
    if is_committee(user):
        own |= ~Q(status=DataRequest.Status.DRAFT)
    sites = pi_site_ids(user)
    if sites:
        own |= Q(status__in=APPROVED_STATUSES, participations__site_id__in=sites)
    return requests.filter(own).distinct()


def access_request(user: AnyUser, pk: int) -> DataRequest:
    request = requests_visible(user).filter(pk=pk).first()
    if request is None:
        raise Http404("No such data request.")
    return request


def is_partner(user: AnyUser) -> bool:
    return Role.PARTNER.value in user_roles(user)


def partner_requests_q(user: AnyUser, prefix: str = "") -> Q:
    """The requests whose releases a partner may have: approved, commercial, of the partner's
    own organisation (no organisation: none). A company sees only what its own approved
    commercial work produced, even when one of its people sits on another study's team."""
    organisation_id = Affiliation.objects.filter(user_id=user.pk).values_list(
        "organisation_id", flat=True).first()
    if organisation_id is None:
        return Q(pk__in=[])
    return Q(**{f"{prefix}status__in": APPROVED_STATUSES,
                f"{prefix}purpose": Purpose.COMMERCIAL,
                f"{prefix}organisation_id": organisation_id})


def on_team(user: AnyUser, request: DataRequest) -> bool:
    """The people who may ask for and download the request's releases: the requester and the
    team; for a partner, only of their organisation's approved commercial requests."""
    if not user.is_authenticated or not user.is_active:
        return False
    if not (request.requester_id == user.pk or request.team.filter(pk=user.pk).exists()):
        return False
    if is_partner(user):
        return DataRequest.objects.filter(partner_requests_q(user), pk=request.pk).exists()
    return True


def releases_visible(user: AnyUser) -> QuerySet[Release]:
    """The releases a person may see listed: their team's (a partner's: partner_requests_q),
    or all for the committee and the admin (who see what was released, not download it)."""
    releases = Release.objects.select_related("request")
    if is_registry_admin(user) or is_committee(user):
        return releases
    if not user.is_authenticated or not user.is_active:
        return releases.none()
    team = Q(request__requester=user) | Q(request__team=user)
    if is_partner(user):
        team &= partner_requests_q(user, prefix="request__")
    return releases.filter(team).distinct()


def access_release(user: AnyUser, pk: int) -> Release:
    release = releases_visible(user).filter(pk=pk).first()
    if release is None:
        raise Http404("No such release.")
    return release


def participations_to_answer(user: AnyUser) -> QuerySet[SiteParticipation]:
    """The site questions this person answers (site PI of the site)."""
    return SiteParticipation.objects.filter(
        site_id__in=pi_site_ids(user), request__status__in=APPROVED_STATUSES
    ).select_related("request", "site")
