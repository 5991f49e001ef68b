"""Reads of API tokens: the token a request presents, a token named by its prefix."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

from registry.api.tokens import token_matches, token_prefix
from registry.models import ApiToken


def api_token_authenticate(text: str, *, now: dt.datetime | None = None) -> ApiToken | None:
    """The token whose text this is, if it may be used now: well formed, known, matching its
    digest, not revoked, not expired, of an active user. Otherwise None, whatever the reason:
    the caller answers every refusal alike."""
    prefix = token_prefix(text)
    if prefix is None:
        return None
    token = ApiToken.objects.select_related("user").filter(prefix=prefix).first()
    if token is None or not token_matches(text, token.digest):
        return None
    if token.state_at(now or timezone.now()) != ApiToken.State.ACTIVE:
        return None
    if not token.user.is_active:
        return None
    return token


def api_token_by_prefix(prefix: str) -> ApiToken | None:
    return ApiToken.objects.select_related("user").filter(prefix=prefix.strip()).first()
