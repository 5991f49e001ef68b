"""The committee's notifications: one e-mail per step, to the people the step concerns, sent
after the step's transaction commits (a refused step sends nothing)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.conf import settings
from django.contrib.auth.models import User
from django.core.mail import send_mass_mail
from django.db import transaction
from django.db.models import Q

from registry.models import Membership, Role

log = logging.getLogger(__name__)


def people_with_role(*roles: str, site_id: int | None = None) -> list[User]:
    memberships = Membership.objects.filter(role__in=roles, is_active=True, user__is_active=True)
    if site_id is not None:
        memberships = memberships.filter(Q(site_id=site_id))
    return list(User.objects.filter(pk__in=memberships.values("user_id")).order_by("pk"))


def notify(users: Iterable[User], subject: str, body: str) -> None:
    """Queue one message per person with an e-mail address, sent on commit."""
    addresses = sorted({u.email for u in users if u.email and u.is_active})
    if not addresses:
        return
    messages = [(f"[Registry] {subject}", body, settings.DEFAULT_FROM_EMAIL, [a])
                for a in addresses]

    def send() -> None:
        try:
            send_mass_mail(messages, fail_silently=False)
        except OSError:  # a mail server down must not undo a committee's decision
            log.exception("Could not send %d notification(s): %s", len(messages), subject)

    transaction.on_commit(send)


def committee() -> list[User]:
    return people_with_role(Role.COMMITTEE, Role.CHAIR)
