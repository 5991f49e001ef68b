"""Reads behind the committee's REST API (research/api/): a request as the caller may see it,
its votes, its feasibility count, the site questions and the releases.

Visibility comes from research.selectors.requests (a request, release or site question someone
may not see is a 404 there); this module gathers what the endpoints answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import QuerySet
from django.http import Http404

from registry.access import AnyUser, is_registry_admin
from registry.errors import NotPermitted
from research.models import DataRequest, Decision, Recusal, Release, SiteParticipation, Vote
from research.selectors.requests import (
    is_committee,
    participations_to_answer,
    releases_visible,
    requests_visible,
)


def may_see_votes(user: AnyUser) -> bool:
    """Votes and recusals are the committee's (and the registry admin's) to read."""
    return is_committee(user) or is_registry_admin(user)


def requests_listed(user: AnyUser) -> QuerySet[DataRequest]:
    """The requests `user` may see, newest first."""
    return requests_visible(user).select_related("requester").order_by("-id")


@dataclass(frozen=True)
class RequestDetail:
    request: DataRequest
    site_codes: list[str]
    team: list[str]
    decision: Decision | None  # the latest (of the newest revision decided)
    participations: list[SiteParticipation]
    releases: list[Release]
    votes: list[Vote] | None  # None: not the caller's to read (may_see_votes)
    recusals: list[Recusal] | None


def request_detail(user: AnyUser, request: DataRequest) -> RequestDetail:
    """Everything `user` (who may see `request`: access_request) is shown of it."""
    votes = recusals = None
    if may_see_votes(user):
        votes = list(request.votes.select_related("member").order_by("revision", "cast_at",
                                                                     "id"))
        recusals = list(request.recusals.select_related("member").order_by("created_at", "id"))
    return RequestDetail(
        request=request,
        site_codes=list(request.sites.order_by("code").values_list("code", flat=True)),
        team=list(request.team.order_by("username").values_list("username", flat=True)),
        decision=request.decisions.select_related("chair").order_by("-revision").first(),
        participations=list(request.participations.select_related("site", "answered_by")
                            .order_by("site__code")),
        releases=list(request_releases(user, request)),
        votes=votes,
        recusals=recusals,
    )


def request_votes(user: AnyUser, request: DataRequest) -> QuerySet[Vote]:
    """Every vote on every revision of `request`, for the committee (and the admin)."""
    if not may_see_votes(user):
        raise NotPermitted("Only committee members read the votes.")
    return request.votes.select_related("member").order_by("revision", "cast_at", "id")


def access_participation(user: AnyUser, pk: int) -> SiteParticipation:
    """A site's answer to a request, visible to whoever may see the request (who then may or
    may not answer it: participation_answer decides)."""
    participation = SiteParticipation.objects.filter(
        pk=pk, request__in=requests_visible(user).values("pk")
    ).select_related("request", "site", "answered_by").first()
    if participation is None:
        raise Http404("No such site question.")
    return participation


def participations_listed(user: AnyUser) -> QuerySet[SiteParticipation]:
    """The site questions this person answers (site PI of the site), newest request first."""
    return participations_to_answer(user).select_related("answered_by").order_by(
        "-request_id", "site__code")


def request_releases(user: AnyUser, request: DataRequest) -> QuerySet[Release]:
    """The releases of `request` that `user` may see, newest first."""
    return releases_visible(user).filter(request=request).order_by("-number")


def releases_listed(user: AnyUser) -> QuerySet[Release]:
    """The releases `user` may see, newest first."""
    return releases_visible(user).order_by("-id")
