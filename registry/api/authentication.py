"""`Authorization: Bearer <token>` for the API (docs/api.md, "Authentication").

A request with a bearer token is that token's user, and `request.auth` is the ApiToken. Every
refusal (a malformed header or token, an unknown, expired or revoked token, an inactive user)
is the same 401 with the same words, so a caller learns nothing about which tokens exist.
Requests without an Authorization header fall through to the registry's login session
(DRF's SessionAuthentication, which enforces CSRF on unsafe methods).
"""

from __future__ import annotations

from django.contrib.auth.models import User
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from registry.api.errors import ERRORS
from registry.models import ApiToken
from registry.selectors.api_tokens import api_token_authenticate
from registry.services.api_tokens import api_token_mark_used

BEARER = "Bearer"
# Longer than any token; a longer header is refused before it is looked at.
_HEADER_MAX = 200


def _refused() -> exceptions.AuthenticationFailed:
    return exceptions.AuthenticationFailed(ERRORS["authentication_failed"].message)


class BearerTokenAuthentication(BaseAuthentication):
    """DRF authentication by API token (registry.models.ApiToken).

    First in DEFAULT_AUTHENTICATION_CLASSES: its challenge (`WWW-Authenticate: Bearer`) is
    what DRF sends with every 401.
    """

    def authenticate(self, request: Request) -> tuple[User, ApiToken] | None:
        header = get_authorization_header(request)
        if not header:
            return None
        scheme, _sep, credentials = header.partition(b" ")
        if scheme.lower() != BEARER.lower().encode():
            return None  # another scheme (Basic to a proxy, say) is not the API's to judge
        if len(header) > _HEADER_MAX:
            raise _refused()
        try:
            text = credentials.decode("ascii").strip()
        except UnicodeDecodeError:
            raise _refused() from None
        token = api_token_authenticate(text)
        if token is None:
            raise _refused()
        api_token_mark_used(token=token)
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        return f'{BEARER} realm="api"'
