"""Reads of the partners' page (research/views/partners.py): the partner organisations, their
people and each person's API tokens, in one set of queries."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.contrib.auth.models import User
from django.db.models import Prefetch
from django.http import Http404
from django.utils import timezone

from registry.api.scopes import scopes_for_user
from registry.models import ApiToken
from research.models import Affiliation, Organisation

PARTNER_KIND = Organisation.Kind.COMPANY


@dataclass(frozen=True)
class TokenRow:
    token: ApiToken
    state: str


@dataclass(frozen=True)
class PersonRow:
    user: User
    scopes: list[str]  # what a new token of theirs may hold (their roles' scopes)
    tokens: list[TokenRow]


@dataclass(frozen=True)
class OrganisationRow:
    organisation: Organisation
    people: list[PersonRow]


def partner_organisations(*, now: dt.datetime | None = None) -> list[OrganisationRow]:
    """Every company with its affiliated people (by username) and their tokens (newest
    first), each token's state as of `now`."""
    now = now or timezone.now()
    tokens = ApiToken.objects.select_related("created_by", "revoked_by").order_by(
        "-created_at", "-id")
    affiliations = Affiliation.objects.select_related("user").prefetch_related(
        Prefetch("user__api_tokens", queryset=tokens)).order_by("user__username")
    organisations = Organisation.objects.filter(kind=PARTNER_KIND).prefetch_related(
        Prefetch("affiliations", queryset=affiliations)).order_by("name")
    return [
        OrganisationRow(organisation=organisation, people=[
            PersonRow(user=a.user, scopes=sorted(scopes_for_user(a.user)),
                      tokens=[TokenRow(t, t.state_at(now)) for t in a.user.api_tokens.all()])
            for a in organisation.affiliations.all()])
        for organisation in organisations
    ]


def access_partner_organisation(pk: int) -> Organisation:
    organisation = Organisation.objects.filter(pk=pk, kind=PARTNER_KIND).first()
    if organisation is None:
        raise Http404("No such partner organisation.")
    return organisation


def access_partner_person(pk: int) -> User:
    """A person affiliated with a partner organisation (the page acts on no one else)."""
    affiliation = Affiliation.objects.select_related("user").filter(
        user_id=pk, organisation__kind=PARTNER_KIND).first()
    if affiliation is None:
        raise Http404("No such partner.")
    return affiliation.user


def access_partner_token(pk: int) -> ApiToken:
    token = ApiToken.objects.select_related("user").filter(
        pk=pk, user__affiliation__organisation__kind=PARTNER_KIND).first()
    if token is None:
        raise Http404("No such token.")
    return token
