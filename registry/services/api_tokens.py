"""API tokens: created (the text shown once), revoked, and stamped when used (docs/api.md)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _

from registry.access import is_registry_admin, user_roles
from registry.api.scopes import Scope, scopes_for_roles
from registry.api.tokens import token_digest, token_generate
from registry.audit import audited_save, history_user
from registry.errors import ErrorCollector, NotPermitted
from registry.models import ApiToken
from registry.models.api import (
    API_TOKEN_EXPIRES_DAYS_MAX,
    API_TOKEN_EXPIRES_DAYS_MIN,
    API_TOKEN_NAME_MAX_LENGTH,
    API_TOKEN_REVOKE_REASON_MAX_LENGTH,
)

# A token's last use is written at most this often: not one write per request.
LAST_USED_RESOLUTION = dt.timedelta(minutes=1)


def _require_may_act_for(acting_user: User | None, user: User, *, revoking: bool) -> None:
    """The person themself or a registry admin; None is an operator at the command line."""
    if acting_user is None:
        return
    if not acting_user.is_active:
        raise NotPermitted(_("An inactive account cannot change API tokens."))
    if acting_user.pk != user.pk and not is_registry_admin(acting_user):
        raise NotPermitted(
            _("Only a registry admin may revoke another person's API token.") if revoking
            else _("Only a registry admin may create an API token for another person."))


def api_token_check(
    *,
    user: User,
    name: str,
    scopes: Collection[str],
    expires_days: int | None,
    acting_user: User | None,
) -> str:
    """Refuse what api_token_create would refuse, writing nothing; return the name as stored.

    Every problem of the input is reported at once (ValidationFailed, by field: user, name,
    scopes, expires_days); a person who may not create this token gets NotPermitted first.
    """
    _require_may_act_for(acting_user, user, revoking=False)
    errors = ErrorCollector()
    if not user.is_active:
        errors.add("user", _("%(user)s is inactive and cannot hold an API token.")
                   % {"user": user.username})
    name = name.strip() if isinstance(name, str) else ""
    if not name:
        errors.add("name", _("A token needs a name (what it is for)."))
    elif len(name) > API_TOKEN_NAME_MAX_LENGTH:
        errors.add("name", _("A token's name is at most %(n)d characters, not %(length)d.")
                   % {"n": API_TOKEN_NAME_MAX_LENGTH, "length": len(name)})
    elif "\x00" in name:
        errors.add("name", _("A token's name may not contain a NUL character."))
    if isinstance(scopes, str) or not all(isinstance(s, str) for s in scopes):
        errors.add("scopes", _("Scopes are a list of scope names."))
    elif not scopes:
        errors.add("scopes", _("Name at least one scope: %(known)s.")
                   % {"known": ", ".join(Scope.values)})
    else:
        unknown = sorted(set(scopes) - set(Scope.values))
        if unknown:
            errors.add("scopes", _("Unknown scope(s): %(unknown)s; the scopes are %(known)s.")
                       % {"unknown": ", ".join(unknown), "known": ", ".join(Scope.values)})
        roles = sorted(user_roles(user))
        refused = sorted(set(scopes) & set(Scope.values) - scopes_for_roles(roles))
        if refused:
            errors.add("scopes", _("The roles of %(user)s (%(roles)s) do not allow the "
                                   "scope(s): %(refused)s.")
                       % {"user": user.username, "roles": ", ".join(roles) or _("none"),
                          "refused": ", ".join(refused)})
    if expires_days is not None:
        if isinstance(expires_days, bool) or not isinstance(expires_days, int):
            errors.add("expires_days", _("The expiry is a whole number of days."))
        elif not API_TOKEN_EXPIRES_DAYS_MIN <= expires_days <= API_TOKEN_EXPIRES_DAYS_MAX:
            errors.add("expires_days", _("A token expires after %(low)d to %(high)d days, not "
                                         "%(days)d.")
                       % {"low": API_TOKEN_EXPIRES_DAYS_MIN, "high": API_TOKEN_EXPIRES_DAYS_MAX,
                          "days": expires_days})
    errors.raise_if_any()
    return name


@transaction.atomic
def api_token_create(
    *,
    user: User,
    name: str,
    scopes: Collection[str],
    expires_days: int | None = None,
    acting_user: User | None,
) -> tuple[ApiToken, str]:
    """Create a token for `user` limited to `scopes`; return it with its text.

    The text is returned here only and never stored (only its digest is): the caller shows it
    once. Refused (nothing written) for an inactive user, an empty or too long name, unknown
    scopes or scopes the user's roles do not allow, and an expiry outside
    API_TOKEN_EXPIRES_DAYS_MIN..MAX days (None: no expiry). A person creates tokens for
    themself; a registry admin for anyone; `acting_user=None` is an operator at the command
    line, recorded as the system account.
    """
    name = api_token_check(user=user, name=name, scopes=scopes, expires_days=expires_days,
                           acting_user=acting_user)
    prefix, text = token_generate()
    now = timezone.now()
    token = ApiToken(
        user=user, name=name, prefix=prefix, digest=token_digest(text),
        scopes=sorted(set(scopes)), created_at=now, created_by=history_user(acting_user),
        expires_at=now + dt.timedelta(days=expires_days) if expires_days else None,
    )
    reason = ("API token created" if acting_user is not None
              else "API token created from the command line")
    audited_save(token, acting_user=acting_user, reason=reason)
    return token, text


def revoke_reason_check(reason: str) -> str:
    """The reason as stored (stripped); ValidationFailed (field `reason`) when too long or
    holding a NUL character."""
    reason = reason.strip() if isinstance(reason, str) else ""
    errors = ErrorCollector()
    if len(reason) > API_TOKEN_REVOKE_REASON_MAX_LENGTH:
        errors.add("reason", _("A reason is at most %(n)d characters, not %(length)d.")
                   % {"n": API_TOKEN_REVOKE_REASON_MAX_LENGTH, "length": len(reason)})
    elif "\x00" in reason:
        errors.add("reason", _("A reason may not contain a NUL character."))
    errors.raise_if_any()
    return reason


@transaction.atomic
def api_token_revoke(*, token: ApiToken, acting_user: User | None, reason: str = "") -> ApiToken:
    """Revoke the token: it authenticates nothing from now on; `reason` (optional, at most
    API_TOKEN_REVOKE_REASON_MAX_LENGTH characters) is kept beside it. Revoking a revoked token
    changes nothing (the first revocation and its reason are kept). The token's owner or a
    registry admin; `acting_user=None` is an operator at the command line, recorded as the
    system account."""
    token = ApiToken.objects.select_for_update(of=("self",)).select_related("user").get(pk=token.pk)
    _require_may_act_for(acting_user, token.user, revoking=True)
    reason = revoke_reason_check(reason)
    if token.revoked_at is not None:
        return token
    token.revoked_at = timezone.now()
    token.revoked_by = history_user(acting_user)
    token.revoke_reason = reason
    # The reason is in the row and so in its history; the change reason stays short.
    change = ("API token revoked" if acting_user is not None
              else "API token revoked from the command line")
    return audited_save(token, acting_user=acting_user, reason=change)


def api_token_mark_used(*, token: ApiToken, now: dt.datetime | None = None) -> bool:
    """Stamp the token's last use, unless it was stamped less than LAST_USED_RESOLUTION ago.

    Bookkeeping, not a change of the token: one conditional UPDATE (concurrent requests
    stamp once), no history row. Returns whether it wrote.
    """
    now = now or timezone.now()
    if token.last_used_at is not None and now - token.last_used_at < LAST_USED_RESOLUTION:
        return False
    stale = Q(last_used_at__isnull=True) | Q(last_used_at__lte=now - LAST_USED_RESOLUTION)
    written = ApiToken.objects.filter(stale, pk=token.pk).update(last_used_at=now)
    if written:
        token.last_used_at = now
    return bool(written)

