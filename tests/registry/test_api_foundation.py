"""The API's foundation over HTTP: bearer tokens from creation to revocation, scopes judged by
token and roles, `me/`, and what a refused token is told (the same whatever the reason).

pat is a partner, ivan an investigator, alice a clerk (no API scope), ada the registry admin.
A test-only endpoint needing a scope is mounted under /api/v1/test/ (ROOT_URLCONF below).
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.urls import include, path
from django.utils import timezone
from rest_framework.response import Response
from rest_framework.views import APIView

from registry.api.permissions import HasScope
from registry.api.scopes import ROLE_SCOPES, Scope, scopes_for_roles
from registry.api.tokens import TOKEN_PATTERN, token_digest
from registry.models import ApiToken, Membership, Role
from registry.services.api_tokens import (
    LAST_USED_RESOLUTION,
    api_token_create,
    api_token_mark_used,
    api_token_revoke,
)

pytestmark = [pytest.mark.postgres,
              pytest.mark.urls("tests.registry.test_api_foundation")]


class ScopedView(APIView):
    """Reading needs `releases`, writing needs `requests`."""

    permission_classes = [HasScope]
    required_scope = {"GET": Scope.RELEASES, "POST": Scope.REQUESTS}

    def get(self, request):
        return Response({"read": True})

    def post(self, request):
        return Response({"written": True})


class UndeclaredView(APIView):
    permission_classes = [HasScope]

    def get(self, request):
        return Response({})


urlpatterns = [
    path("api/v1/test/scoped/", ScopedView.as_view()),
    path("api/v1/test/undeclared/", UndeclaredView.as_view()),
    path("", include("registry.urls")),
]

SCOPED = "/api/v1/test/scoped/"
ME = "/api/v1/me/"


def bearer(text: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {text}"}


def _without_request_id(body: dict) -> dict:
    return {k: v for k, v in body.items() if k != "request_id"}


@pytest.fixture
def pat_token(pat):
    return api_token_create(user=pat, name="analytics", scopes=["releases", "aggregates"],
                            expires_days=30, acting_user=None)


# -- the scope table ----------------------------------------------------------------------------

def test_each_role_holds_the_scopes_the_design_gives_it():
    assert {
        Role.PARTNER: {"aggregates", "feasibility", "releases", "scoring"},
        Role.INVESTIGATOR: {"requests", "releases"},
        Role.COMMITTEE: {"requests"},
        Role.CHAIR: {"requests"},
        Role.SITE_PI: {"requests"},
        Role.ADMIN: set(Scope.values),
    } == ROLE_SCOPES
    assert scopes_for_roles([Role.CLERK, Role.MONITOR]) == frozenset()
    assert scopes_for_roles([Role.COMMITTEE, Role.PARTNER]) == ROLE_SCOPES[Role.PARTNER] | {
        "requests"}
    assert all(str(scope.label) for scope in Scope)


# -- a token's life -----------------------------------------------------------------------------

def test_a_new_token_is_stored_as_a_digest_and_works(client, pat, pat_token):
    token, text = pat_token
    assert TOKEN_PATTERN.fullmatch(text)
    stored = ApiToken.objects.get(pk=token.pk)
    assert stored.digest == token_digest(text) and len(stored.digest) == 64
    assert text.split("_", 2)[2] not in repr(ApiToken.objects.filter(pk=token.pk).values())
    assert stored.prefix == text.split("_")[1]
    assert stored.last_used_at is None

    response = client.get(ME, **bearer(text))
    assert response.status_code == 200
    assert response.json() == {
        "username": "pat", "roles": ["partner"], "authenticated_by": "token",
        "scopes": ["aggregates", "releases"],
        "expires_at": response.json()["expires_at"],
    }
    expires = dt.datetime.fromisoformat(response.json()["expires_at"])
    assert expires == stored.expires_at
    assert ApiToken.objects.get(pk=token.pk).last_used_at is not None
    assert client.get(SCOPED, **bearer(text)).status_code == 200


def test_me_for_a_login_session(client, ivan):
    client.force_login(ivan)
    response = client.get(ME)
    assert response.status_code == 200
    assert response.json() == {"username": "ivan", "roles": ["investigator"],
                               "authenticated_by": "session", "scopes": None,
                               "expires_at": None}


def _refusal(client, headers) -> tuple[int, dict, str]:
    response = client.get(ME, **headers)
    return response.status_code, response.json(), response.get("WWW-Authenticate", "")


def test_every_refused_token_gets_the_same_answer(client, pat, ada, pat_token):
    """Unknown, mistyped, malformed, expired, revoked, of an inactive user: one 401, one body,
    the bearer challenge; nothing tells which."""
    token, text = pat_token
    secret_changed = text[:-1] + ("A" if text[-1] != "A" else "B")
    unknown = "rwe_0123456789ab_" + "x" * 43
    headers = {
        "unknown": bearer(unknown),
        "secret changed": bearer(secret_changed),
        "truncated": bearer(text[:-1]),
        "extra part": {"HTTP_AUTHORIZATION": f"Bearer {text} more"},
        "bare scheme": {"HTTP_AUTHORIZATION": "Bearer"},
        "empty token": {"HTTP_AUTHORIZATION": "Bearer "},
        "not a token": bearer("not-a-token"),
        "lower-case scheme, bad token": {"HTTP_AUTHORIZATION": "bearer nope"},
        "non-ASCII": bearer("rwe_é"),
        "huge": bearer("rwe_" + "a" * 100_000),
        "NUL": bearer("rwe_\x00"),
    }
    answers = {name: _refusal(client, h) for name, h in headers.items()}

    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - dt.timedelta(
        seconds=1))
    answers["expired"] = _refusal(client, bearer(text))
    ApiToken.objects.filter(pk=token.pk).update(expires_at=None)
    assert client.get(ME, **bearer(text)).status_code == 200  # usable again: not expired
    pat.is_active = False
    pat.save(update_fields=["is_active"])
    answers["inactive user"] = _refusal(client, bearer(text))
    pat.is_active = True
    pat.save(update_fields=["is_active"])
    api_token_revoke(token=token, acting_user=ada)
    answers["revoked"] = _refusal(client, bearer(text))

    statuses = {name: status for name, (status, _b, _c) in answers.items()}
    assert set(statuses.values()) == {401}, statuses
    bodies = {name: _without_request_id(body) for name, (_s, body, _c) in answers.items()}
    first = bodies["unknown"]
    assert first["error"]["code"] == "authentication_failed"
    assert first["error"]["fields"] == {}
    assert all(body == first for body in bodies.values()), bodies
    assert {challenge for _s, _b, challenge in answers.values()} == {'Bearer realm="api"'}


def test_another_scheme_is_left_to_the_session(client, ivan):
    client.force_login(ivan)
    response = client.get(ME, HTTP_AUTHORIZATION="Basic aXZhbjpwdw==")
    assert response.status_code == 200
    assert response.json()["authenticated_by"] == "session"
    client.logout()
    response = client.get(ME, HTTP_AUTHORIZATION="Basic aXZhbjpwdw==")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_the_last_use_is_written_at_most_once_a_minute(pat_token):
    token, _text = pat_token
    now = timezone.now()
    assert api_token_mark_used(token=token, now=now) is True
    assert api_token_mark_used(token=token, now=now + dt.timedelta(seconds=30)) is False
    # A copy read before the first stamp (another request) does not write either.
    stale = ApiToken.objects.get(pk=token.pk)
    stale.last_used_at = None
    assert api_token_mark_used(token=stale, now=now + dt.timedelta(seconds=30)) is False
    assert ApiToken.objects.get(pk=token.pk).last_used_at == now
    later = now + LAST_USED_RESOLUTION
    assert api_token_mark_used(token=token, now=later) is True
    assert ApiToken.objects.get(pk=token.pk).last_used_at == later
    # Bookkeeping leaves no history row: only the creation is there.
    assert list(ApiToken.history.filter(id=token.pk).values_list("history_type", flat=True)) == [
        "+"]


# -- scopes ------------------------------------------------------------------------------------

def test_a_token_without_the_scope_is_refused_with_403(client, pat):
    _token, text = api_token_create(user=pat, name="counts", scopes=["aggregates"],
                                    acting_user=None)
    response = client.get(SCOPED, **bearer(text))
    assert response.status_code == 403
    body = response.json()
    assert body["error"]["code"] == "permission_denied"
    assert "releases" in body["error"]["message"]


def test_a_scope_the_roles_no_longer_allow_is_refused(client, pat, pat_token):
    _token, text = pat_token
    assert client.get(SCOPED, **bearer(text)).status_code == 200
    Membership.objects.filter(user=pat, role=Role.PARTNER).update(is_active=False)
    response = client.get(SCOPED, **bearer(text))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"


def test_the_scope_of_each_method(client, pat, ivan, pat_token):
    _token, pat_text = pat_token
    assert client.post(SCOPED, {}, content_type="application/json",
                       **bearer(pat_text)).status_code == 403  # requests: not a partner's
    _token, ivan_text = api_token_create(user=ivan, name="study", scopes=["requests"],
                                         acting_user=ivan)
    assert client.post(SCOPED, {}, content_type="application/json",
                       **bearer(ivan_text)).status_code == 200
    assert client.get(SCOPED, **bearer(ivan_text)).status_code == 403  # releases not on it
    assert client.head(SCOPED, **bearer(ivan_text)).status_code == 403  # HEAD is GET's


def test_sessions_are_judged_by_their_roles(client, ivan, alice, ada):
    client.force_login(ivan)
    assert client.get(SCOPED).status_code == 200
    assert client.post(SCOPED, {}, content_type="application/json").status_code == 200
    client.force_login(alice)  # a clerk: no API scope
    response = client.get(SCOPED)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    client.force_login(ada)
    assert client.get(SCOPED).status_code == 200
    client.logout()
    response = client.get(SCOPED)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    assert response.json()["error"]["code"] == "not_authenticated"


def test_a_session_write_needs_its_csrf_token(ivan):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(ivan)
    response = client.post(SCOPED, {}, content_type="application/json")
    assert response.status_code == 403
    assert "CSRF" in response.json()["error"]["message"]
    assert client.get(SCOPED).status_code == 200


def test_a_view_that_declares_no_scope_fails_loudly(client, ivan):
    client.force_login(ivan)
    with pytest.raises(ImproperlyConfigured, match="required_scope"):
        client.get("/api/v1/test/undeclared/")


# -- outside the test transaction ------------------------------------------------------------

@pytest.mark.django_db(transaction=True)
def test_create_use_and_revoke_outside_a_test_transaction(client, pat, ada):
    token, text = api_token_create(user=pat, name="pipeline", scopes=["releases"],
                                   expires_days=7, acting_user=ada)
    created = ApiToken.history.get(id=token.pk, history_type="+")
    assert (created.history_user, created.history_change_reason, created.user_id) == (
        ada, "API token created", pat.pk)
    assert client.get(SCOPED, **bearer(text)).status_code == 200

    api_token_revoke(token=token, acting_user=ada)
    stored = ApiToken.objects.get(pk=token.pk)
    assert stored.revoked_by == ada and stored.revoked_at is not None
    assert stored.state_at(timezone.now()) == ApiToken.State.REVOKED
    revoked = ApiToken.history.filter(id=token.pk).latest("history_date", "history_id")
    assert (revoked.history_user, revoked.history_change_reason) == (ada, "API token revoked")
    assert client.get(SCOPED, **bearer(text)).status_code == 401
