"""Scopes of API tokens, defined once: what each allows and which roles may hold it.

A token names its scopes when it is created (registry.services.api_tokens); a request is then
allowed a scope when the token names it AND the user's roles still allow it (a partner who
loses the role loses the scope at once). A logged-in session is judged by its roles alone.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib.auth.models import AnonymousUser, User
from django.db import models
from django.utils.translation import gettext_lazy as _

from registry.access import user_roles
from registry.models import Role


class Scope(models.TextChoices):
    REQUESTS = "requests", _(
        "Data requests: create, submit, read, vote, decide, opt in")
    RELEASES = "releases", _("Releases: list and download approved releases")
    AGGREGATES = "aggregates", _("Aggregate statistics of the cohort")
    FEASIBILITY = "feasibility", _("Feasibility counts of a cohort definition")
    SCORING = "scoring", _("Risk-model scores")


# Which roles may hold which scopes; a registry admin may hold every scope.
ROLE_SCOPES: dict[str, frozenset[str]] = {
    Role.PARTNER: frozenset({Scope.AGGREGATES, Scope.FEASIBILITY, Scope.RELEASES,
                             Scope.SCORING}),
    Role.INVESTIGATOR: frozenset({Scope.REQUESTS, Scope.RELEASES}),
    Role.COMMITTEE: frozenset({Scope.REQUESTS}),
    Role.CHAIR: frozenset({Scope.REQUESTS}),
    Role.SITE_PI: frozenset({Scope.REQUESTS}),
    Role.ADMIN: frozenset(Scope.values),
}


def scopes_for_roles(roles: Iterable[str]) -> frozenset[str]:
    """The scopes that the holder of `roles` may use (roles without an API hold none)."""
    allowed: set[str] = set()
    for role in roles:
        allowed |= ROLE_SCOPES.get(role, frozenset())
    return frozenset(allowed)


def scopes_for_user(user: User | AnonymousUser) -> frozenset[str]:
    """The scopes the user's active roles allow now (none for an inactive user)."""
    if not user.is_authenticated or not user.is_active:
        return frozenset()
    return scopes_for_roles(user_roles(user))
