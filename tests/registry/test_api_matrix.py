"""Role x endpoint x method over EVERY route under /api/v1/, found by walking the URL resolver
(an endpoint added later is covered without touching this file):

- without credentials: 401 (not_authenticated) on every method;
- a token of each role, one per scope the role may hold: 403 (permission_denied, naming the
  scope) where the endpoint needs another scope; otherwise neither 401 nor a scope refusal;
- a method the endpoint does not offer, with a token that holds its scope: 405 with Allow;
- an expired, revoked or malformed token: 401 with the same body everywhere;
- every endpoint but the public schema pages declares the scope it needs.

Objects named in paths do not exist (id 999999), so nothing is changed by the requests.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from rest_framework.permissions import AllowAny

from registry.api.permissions import HasScope
from registry.api.scopes import ROLE_SCOPES, Scope
from registry.models import ApiToken, Role
from registry.services.api_tokens import api_token_create, api_token_revoke
from tests.conftest import _person

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

API_PREFIX = "api/v1/"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
MISSING_ID = "999999"
_CONVERTER = re.compile(r"<(?:(?P<converter>[^>:]+):)?(?P<name>[^>]+)>")
_SAMPLES = {"int": MISSING_ID, "str": "nothing.csv", "slug": "nothing", "path": "nothing",
            "uuid": "00000000-0000-0000-0000-000000000000"}


@dataclass(frozen=True)
class Endpoint:
    path: str
    view: type

    @property
    def public(self) -> bool:
        return any(issubclass(p, AllowAny) for p in self.view.permission_classes)

    @property
    def offered(self) -> set[str]:
        return {m.upper() for m in self.view.http_method_names
                if m not in {"options", "head"} and hasattr(self.view, m)}

    def needs(self, method: str) -> set[str] | None:
        """The scopes of which one opens `method`; None: any authenticated caller."""
        required = getattr(self.view, "required_scope", None)
        if required is None:
            return None
        if isinstance(required, dict):
            return {required[method]} if method in required else set()
        if isinstance(required, str):
            return {required}
        return set(required)


def _walk(patterns, prefix: str = ""):
    for pattern in patterns:
        route = prefix + str(pattern.pattern).lstrip("^").rstrip("$")
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, route)
        elif isinstance(pattern, URLPattern):
            yield route, pattern.callback


def api_endpoints() -> list[Endpoint]:
    endpoints = []
    for route, callback in _walk(get_resolver().url_patterns):
        if not route.startswith(API_PREFIX):
            continue
        view = getattr(callback, "cls", None) or getattr(callback, "view_class", None)
        path = "/" + _CONVERTER.sub(lambda m: _SAMPLES[m["converter"] or "str"], route)
        endpoints.append(Endpoint(path=path, view=view))
    return endpoints


ENDPOINTS = api_endpoints()
GUARDED = [e for e in ENDPOINTS if not e.public]


def test_the_walk_finds_the_known_endpoints():
    paths = {e.path for e in ENDPOINTS}
    assert {"/api/v1/me/", "/api/v1/schema/", "/api/v1/requests/",
            f"/api/v1/releases/{MISSING_ID}/files/nothing.csv"} <= paths
    assert all(e.view is not None for e in ENDPOINTS)
    assert {e.path for e in ENDPOINTS if e.public} == {"/api/v1/schema/", "/api/v1/docs/"}


@pytest.mark.parametrize("endpoint", GUARDED, ids=lambda e: e.path)
def test_every_guarded_endpoint_declares_its_scope(endpoint):
    if endpoint.path == "/api/v1/me/":
        return  # who the caller is: any token or session
    assert getattr(endpoint.view, "required_scope", None), endpoint.path
    for method in endpoint.offered:
        assert endpoint.needs(method), (endpoint.path, method)
        assert endpoint.needs(method) <= set(Scope.values), (endpoint.path, method)
    assert not any(issubclass(p, AllowAny) for p in endpoint.view.permission_classes)
    assert HasScope in endpoint.view.permission_classes or any(
        p.__name__ == "HasAnyScope" for p in endpoint.view.permission_classes)


def _send(client: Client, method: str, path: str, **headers):
    return client.generic(method, path, b"{}", content_type="application/json", **headers)


@pytest.fixture(autouse=True)
def _no_rate_limits(settings):
    settings.API_RATE_LIMITS = {name: "1000000/min" for name in
                                ("default", "scoring", "aggregates", "feasibility")}


@pytest.fixture
def tokens(site_a) -> list[tuple[str, str, set[str]]]:
    """(role, token text, scopes): one token per scope each role may hold."""
    out = []
    for index, (role, scopes) in enumerate(ROLE_SCOPES.items()):
        sites = [site_a] if role == Role.SITE_PI else []
        user = _person(f"role{index}", role, sites)
        for scope in sorted(scopes):
            text = api_token_create(user=user, name=scope, scopes=[scope], expires_days=30,
                                    acting_user=None)[1]
            out.append((role, text, {scope}))
    return out


def test_without_credentials_every_method_is_401():
    client = Client()
    problems = []
    for endpoint in GUARDED:
        for method in METHODS:
            response = _send(client, method, endpoint.path)
            if (response.status_code != 401
                    or response.json()["error"]["code"] != "not_authenticated"
                    or not response.get("WWW-Authenticate", "").startswith("Bearer")):
                problems.append(f"{method} {endpoint.path}: {response.status_code}")
    assert not problems, "\n".join(problems)


def test_each_role_s_tokens_on_each_endpoint_and_method(tokens):
    problems = []
    counts = {"refused": 0, "allowed": 0, "not offered": 0}
    for role, text, scopes in tokens:
        client = Client(HTTP_AUTHORIZATION=f"Bearer {text}")
        for endpoint in GUARDED:
            for method in METHODS:
                needs = endpoint.needs(method if method in endpoint.offered else "GET")
                response = _send(client, method, endpoint.path)
                status = response.status_code
                label = f"{role} {sorted(scopes)} {method} {endpoint.path}: {status}"
                if needs is not None and not needs & scopes:
                    counts["refused"] += 1
                    if status != 403 or response.json()["error"]["code"] != (
                            "permission_denied") or "scope" not in response.json()[
                            "error"]["message"]:
                        problems.append(label + " (expected 403 for the scope)")
                elif method not in endpoint.offered:
                    counts["not offered"] += 1
                    if status != 405 or method in response.get("Allow", ""):
                        problems.append(label + " (expected 405)")
                else:
                    counts["allowed"] += 1
                    body = response.json() if status >= 400 else {}
                    scope_refusal = status == 403 and "scope" in body["error"]["message"]
                    if status in (401, 405) or scope_refusal or status >= 500:
                        problems.append(label + " (expected the endpoint to answer)")
    assert not problems, "\n".join(problems)
    assert all(counts.values()), counts


def test_a_session_without_scopes_is_refused_everywhere_but_me(alice):
    client = Client()
    client.force_login(alice)  # a clerk: no scope at all
    for endpoint in GUARDED:
        response = client.get(endpoint.path)
        expected = 200 if endpoint.path == "/api/v1/me/" else 403
        assert response.status_code == expected, endpoint.path


def _bad_tokens(pat) -> dict[str, str]:
    expired_token, expired = api_token_create(user=pat, name="expired", scopes=["releases"],
                                              expires_days=1, acting_user=None)
    ApiToken.objects.filter(pk=expired_token.pk).update(
        expires_at=timezone.now() - dt.timedelta(seconds=1))
    revoked_token, revoked = api_token_create(user=pat, name="revoked", scopes=["releases"],
                                              expires_days=30, acting_user=None)
    api_token_revoke(token=revoked_token, acting_user=None, reason="test")
    return {"expired": expired, "revoked": revoked,
            "malformed": "rwe_nothex_" + "x" * 43,
            "wrong secret": revoked[:-4] + "AAAA",
            "not ascii": "rwe_é"}


def test_expired_revoked_and_malformed_tokens_get_one_and_the_same_401(pat):
    bodies = set()
    for kind, text in _bad_tokens(pat).items():
        client = Client(HTTP_AUTHORIZATION=f"Bearer {text}")
        for endpoint in GUARDED:
            for method in METHODS:
                response = _send(client, method, endpoint.path)
                assert response.status_code == 401, (kind, method, endpoint.path)
                error = response.json()["error"]
                bodies.add((error["code"], error["message"], str(error["fields"]),
                            response["WWW-Authenticate"]))
    assert len(bodies) == 1, bodies
    assert next(iter(bodies))[0] == "authentication_failed"


def test_every_operation_documents_the_rate_limit_statuses(client):
    schema = client.get("/api/v1/schema/", {"format": "json"}).json()
    operations = [(path, method, op) for path, item in schema["paths"].items()
                  for method, op in item.items() if method != "parameters"]
    assert len(operations) >= len(GUARDED)
    for path, method, operation in operations:
        for status in ("401", "429", "503"):
            assert status in operation["responses"], (path, method, status)
        assert "Retry-After" in operation["responses"]["429"]["headers"], (path, method)
        assert operation["responses"]["429"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Error"}


def test_a_per_method_mapping_refuses_an_unnamed_method_and_lets_an_unoffered_one_be_405(pat):
    from rest_framework.response import Response
    from rest_framework.test import APIRequestFactory, force_authenticate
    from rest_framework.views import APIView

    class Mapped(APIView):
        permission_classes = [HasScope]
        required_scope = {"GET": Scope.RELEASES}

        def get(self, request):
            return Response({})

        def post(self, request):  # offered, but the mapping names no scope for it
            return Response({})

    factory = APIRequestFactory()
    for method, expected in [("get", 200), ("head", 200), ("post", 403), ("delete", 405)]:
        request = getattr(factory, method)("/api/v1/x/")
        force_authenticate(request, user=pat)
        assert Mapped.as_view()(request).status_code == expected, method
