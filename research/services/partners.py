"""Partner organisations and their people, kept by the registry admin (the partners' page and
`manage.py partner_token`). Tokens themselves are registry.services.api_tokens'."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.db import transaction

from registry.access import is_registry_admin
from registry.errors import NotPermitted
from registry.models import Role
from registry.services.organisation import user_add
from research.models import Affiliation, Organisation
from research.services.requests import affiliation_set, organisation_upsert


def _require_admin(acting_user: User | None) -> None:
    if acting_user is not None and not is_registry_admin(acting_user):
        raise NotPermitted("Only the registry admin keeps partner organisations.")


def partner_organisation_add(*, name: str, acting_user: User | None) -> Organisation:
    """A company (Organisation of kind company), created or found by name; an organisation of
    another kind by that name becomes a company."""
    _require_admin(acting_user)
    return organisation_upsert(name=name, kind=Organisation.Kind.COMPANY,
                               acting_user=acting_user)


@transaction.atomic
def partner_person_add(*, organisation: Organisation, username: str, email: str = "",
                       acting_user: User | None) -> tuple[User, Affiliation]:
    """The person (created without a usable password when new: a partner works with tokens)
    gets the partner role and works for `organisation` from now on, in one transaction."""
    _require_admin(acting_user)
    user, _memberships = user_add(username=username, role=Role.PARTNER, email=email,
                                  acting_user=acting_user)
    affiliation = affiliation_set(user=user, organisation=organisation,
                                  acting_user=acting_user)
    return user, affiliation
