"""Reads behind the research pages: who uses them, each person's home, a request's page with
the actions its viewer may take, and the variable catalog as browsed.

Visibility comes from research.selectors.requests (a request someone may not see is a 404
there); this module only gathers what those pages show.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db.models import Q, QuerySet
from django.utils import timezone, translation

from registry.access import AnyUser, is_registry_admin, user_roles
from registry.kinds import KINDS
from registry.models import Role, Site
from research import catalog
from research.disclosure import Disclosed
from research.models import (
    APPROVED_STATUSES,
    DataRequest,
    Recusal,
    Release,
    SiteParticipation,
    Vote,
    VoteChoice,
)
from research.selectors.cohort import request_feasibility
from research.selectors.requests import (
    COMMITTEE_ROLES,
    REQUESTER_ROLES,
    is_chair,
    is_committee,
    may_request,
    on_team,
    participations_to_answer,
    pi_site_ids,
    releases_visible,
)
from research.services.committee import recusal_reason, tally
from research.services.requests import EDITABLE_STATUSES

# The roles the research pages have something for (the navigation shows them the link).
RESEARCH_ROLES = frozenset(r.value for r in (*REQUESTER_ROLES, *COMMITTEE_ROLES, Role.SITE_PI,
                                             Role.ADMIN))
# How many rows a list on the research home shows.
HOME_LIST_MAX = 100


def uses_research(user: AnyUser) -> bool:
    return bool(user_roles(user) & RESEARCH_ROLES)


def active_sites() -> QuerySet[Site]:
    """The sites a request may ask."""
    return Site.objects.filter(is_active=True).order_by("code")


def team_releases(user: AnyUser) -> QuerySet[Release]:
    """The releases of the requests this person requested or is on the team of."""
    if not user.is_authenticated or not user.is_active:
        return Release.objects.none()
    return (Release.objects.filter(Q(request__requester=user) | Q(request__team=user))
            .select_related("request").distinct().order_by("-id"))


@dataclass
class ReviewItem:
    request: DataRequest
    vote: Vote | None
    recused: str | None  # the Recusal.Reason label, or None
    tally: dict | None  # the chair's view: the current revision's tally


def _review_queue(user: AnyUser) -> list[ReviewItem]:
    under_review = list(DataRequest.objects.filter(status=DataRequest.Status.SUBMITTED)
                        .select_related("requester").order_by("submitted_at", "id")
                        [:HOME_LIST_MAX])
    votes = {(v.request_id, v.revision): v for v in Vote.objects.filter(
        member=user, request__in=under_review)}
    chair = is_chair(user)
    items = []
    for request in under_review:
        reason = recusal_reason(request=request, member=user)
        items.append(ReviewItem(
            request=request, vote=votes.get((request.pk, request.revision)),
            recused=Recusal.Reason(reason).label if reason else None,
            tally=tally(request) if chair else None))
    return items


def research_home(user: AnyUser) -> dict:
    """What the research home shows this person: each list only for the roles it is for."""
    home: dict = {"may_request": may_request(user), "is_committee": is_committee(user),
                  "is_chair": is_chair(user), "is_admin": is_registry_admin(user)}
    if home["may_request"]:
        home["my_requests"] = list(
            DataRequest.objects.filter(Q(requester=user) | Q(team=user)).distinct()
            .select_related("requester").order_by("-id")[:HOME_LIST_MAX])
    if home["is_committee"]:
        home["reviews"] = _review_queue(user)
    if pi_site_ids(user):
        questions = list(participations_to_answer(user).order_by("-request_id", "site__code")
                         [:HOME_LIST_MAX])
        home["pending"] = [p for p in questions if p.answer == SiteParticipation.Answer.PENDING]
        home["answered"] = [p for p in questions if p.answer != SiteParticipation.Answer.PENDING]
    home["releases"] = list(team_releases(user)[:HOME_LIST_MAX])
    if home["is_admin"]:
        home["all_requests"] = list(DataRequest.objects.select_related("requester")
                                    .order_by("-id")[:HOME_LIST_MAX])
    return home


@dataclass
class RequestPage:
    request: DataRequest
    variables: list[catalog.Variable]
    quasi_identifiers: list[catalog.Variable]
    sites: list[Site]
    team: list
    feasibility: Disclosed
    decisions: list
    participations: list[SiteParticipation]
    releases: list[Release]
    recusals: list[Recusal]
    votes: list[Vote] = field(default_factory=list)  # shown to the committee and the admin
    # What the viewer may do here.
    is_requester: bool = False
    may_edit: bool = False
    is_committee: bool = False
    my_recusal: str | None = None  # Recusal.Reason label
    my_vote: Vote | None = None
    may_vote: bool = False
    may_declare: bool = False
    may_decide: bool = False
    tally: dict | None = None
    to_answer: list[SiteParticipation] = field(default_factory=list)
    may_release: bool = False


def requested_variables(request: DataRequest) -> list[catalog.Variable]:
    known = catalog.by_name()
    return [known[n] for n in request.variables if n in known]


def quasi_identifier_choices(request: DataRequest) -> list[tuple[str, str]]:
    """The requested quasi-identifiers the chair may approve: (name, label with the name)."""
    return [(v.name, f"{v.label()} ({v.name})") for v in requested_variables(request)
            if v.klass == catalog.QUASI]


def request_page(user: AnyUser, request: DataRequest) -> RequestPage:
    """Everything the request page shows `user` (who may see `request`: access_request)."""
    variables = requested_variables(request)
    participations = list(request.participations.select_related("site", "answered_by")
                          .order_by("site__code"))
    team = list(request.team.order_by("username"))
    page = RequestPage(
        request=request, variables=variables,
        quasi_identifiers=[v for v in variables if v.klass == catalog.QUASI],
        sites=list(request.sites.order_by("code")), team=team,
        feasibility=request_feasibility(request),
        decisions=list(request.decisions.select_related("chair").order_by("-revision")),
        participations=participations,
        releases=list(releases_visible(user).filter(request=request).order_by("-number")),
        recusals=list(request.recusals.select_related("member").order_by("created_at", "id")),
    )
    committee = is_committee(user)
    page.is_committee = committee
    page.is_requester = request.requester_id == user.pk
    page.may_edit = page.is_requester and request.status in EDITABLE_STATUSES
    if committee or is_registry_admin(user):
        page.votes = list(request.votes.select_related("member").order_by("-revision",
                                                                          "cast_at", "id"))
    under_review = request.status == DataRequest.Status.SUBMITTED
    if committee and under_review:
        reason = recusal_reason(request=request, member=user)
        page.my_recusal = Recusal.Reason(reason).label if reason else None
        page.my_vote = next((v for v in request.votes.filter(revision=request.revision,
                                                               member=user)), None)
        page.may_vote = reason is None and page.my_vote is None
        page.may_declare = not any(r.member_id == user.pk for r in page.recusals)
        counted = tally(request)
        page.tally = {**counted, "outcome_label": VoteChoice(counted["outcome"]).label}
        page.may_decide = is_chair(user) and reason is None
    if request.status in APPROVED_STATUSES:
        sites = set(pi_site_ids(user))
        page.to_answer = [p for p in participations if p.site_id in sites]
        on_team = page.is_requester or any(u.pk == user.pk for u in team)
        page.may_release = on_team and any(
            p.answer == SiteParticipation.Answer.OPTED_IN for p in participations)
    return page


# The variable catalog as browsed.

CLASS_ORDER = {catalog.DIRECT: 0, catalog.QUASI: 1, catalog.CLINICAL: 2}


@dataclass(frozen=True)
class CatalogRow:
    variable: catalog.Variable
    label: str  # in the active language
    values: tuple[tuple[str, str], ...]  # (code, label in the active language)


@dataclass(frozen=True)
class CatalogTable:
    name: str  # the release table
    label: str  # the record kind's name in the active language
    rows: tuple[CatalogRow, ...]


def table_label(table: str) -> str:
    return str(KINDS[catalog.tables()[table]].label_plural)


def _chinese() -> bool:
    return translation.get_language() in catalog.ZH_LANGUAGES


def catalog_browse(*, q: str = "", table: str = "", klass: str = "") -> list[CatalogTable]:
    """The catalog's variables by release table, filtered by table, class and a search of the
    name and both labels (case-insensitive); labels and values in the active language."""
    zh = _chinese()
    needle = q.strip().casefold()
    out = []
    for name in catalog.tables():
        if table and name != table:
            continue
        rows = []
        for v in catalog.variables():
            if v.table != name or (klass and v.klass != klass):
                continue
            if needle and not any(needle in s.casefold()
                                  for s in (v.name, v.label_en, v.label_zh)):
                continue
            values = tuple((code, zh_label if zh else en_label)
                           for code, (en_label, zh_label) in v.value_labels().items())
            rows.append(CatalogRow(v, v.label_zh if zh else v.label_en, values))
        if rows:
            out.append(CatalogTable(name, table_label(name), tuple(rows)))
    return out


def requestable_by_table() -> list[tuple[str, str, list[tuple[catalog.Variable, str]]]]:
    """What a request may ask for, by release table: (table, its label, [(variable, label)])."""
    zh = _chinese()
    out = []
    for name in catalog.tables():
        found = [(v, v.label_zh if zh else v.label_en) for v in catalog.requestable()
                 if v.table == name]
        if found:
            out.append((name, table_label(name), found))
    return out


# A release's page.

@dataclass
class ReleasePage:
    release: Release
    files: list
    on_team: bool
    may_download: bool
    downloads: list  # shown to the team
    k_levels: list[tuple[str, dict]]  # (quasi-identifier, its level entry)


def release_page(user: AnyUser, release: Release) -> ReleasePage:
    """What the release page shows `user` (who may see `release`: access_release). The team
    downloads and sees the downloads; the committee and the admin see what was released."""
    team = on_team(user, release.request)
    downloads = []
    if team:
        downloads = list(release.downloads.select_related("user", "file").order_by("-at", "-id")
                         [:HOME_LIST_MAX])
    return ReleasePage(
        release=release, files=list(release.files.order_by("name")), on_team=team,
        may_download=team and release.status == Release.Status.READY
        and release.expires_at > timezone.now(),
        downloads=downloads,
        k_levels=sorted((release.k_report or {}).get("levels", {}).items()))
