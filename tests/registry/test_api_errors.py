"""One error body for every API error, whoever answers (an endpoint, DRF, Django itself), and
a request id on every response.

Test-only endpoints under /api/v1/test/ (ROOT_URLCONF below) raise each kind of error.
"""

from __future__ import annotations

import re

import pytest
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, HttpResponse
from django.test import Client
from django.urls import include, path
from rest_framework import serializers
from rest_framework.generics import ListAPIView
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from registry.api.errors import ERROR_CODES, ERROR_FOR_STATUS, detail_fields, error_body
from registry.api.pagination import API_PAGE_SIZE, API_PAGE_SIZE_MAX
from registry.api.request_ids import REQUEST_ID_HEADER
from registry.errors import NotPermitted, StaleEdit, ValidationFailed

pytestmark = [pytest.mark.postgres, pytest.mark.urls("tests.registry.test_api_errors")]


class EchoView(APIView):
    """A POST endpoint validating its input with a nested Input serializer."""

    permission_classes = [AllowAny]

    class Input(serializers.Serializer):
        class Item(serializers.Serializer):
            dose = serializers.DecimalField(max_digits=6, decimal_places=2)

        name = serializers.CharField(max_length=10)
        count = serializers.IntegerField(min_value=0)
        items = Item(many=True, required=False)

    def post(self, request):
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        return Response({"name": data.validated_data["name"]}, status=201)


class DomainErrorView(APIView):
    permission_classes = [AllowAny]
    raised = {
        "validation": ValidationFailed(errors={"grade": ["Grade 6 does not exist."],
                                               "__all__": ["Nothing was written."]}),
        "not-permitted": NotPermitted("Only a monitor may lock a record."),
        "stale": StaleEdit("The record changed since version 3."),
        "http404": Http404("No release matches the given query."),
        "django-denied": DjangoPermissionDenied(),
    }

    def get(self, request, kind):
        raise self.raised[kind]


class BoomView(APIView):
    permission_classes = [AllowAny]

    def get(self, request):
        raise RuntimeError("a bug")


def plain_boom(request):
    raise RuntimeError("a bug outside DRF")


def plain_html_404(request):
    return HttpResponse("<h1>gone</h1>", status=404)


class AlwaysThrottled(BaseThrottle):
    def allow_request(self, request, view):
        return False

    def wait(self):
        return 6.2


class ThrottledView(APIView):
    permission_classes = [AllowAny]
    throttle_classes = [AlwaysThrottled]

    def get(self, request):
        return Response({})


class NumbersView(ListAPIView):
    permission_classes = [AllowAny]

    class Output(serializers.Serializer):
        n = serializers.IntegerField()

    serializer_class = Output

    def get_queryset(self):
        return [{"n": n} for n in range(1200)]


urlpatterns = [
    path("api/v1/test/echo/", EchoView.as_view()),
    path("api/v1/test/domain/<str:kind>/", DomainErrorView.as_view()),
    path("api/v1/test/boom/", BoomView.as_view()),
    path("api/v1/test/plain-boom/", plain_boom),
    path("api/v1/test/plain-404/", plain_html_404),
    path("api/v1/test/throttled/", ThrottledView.as_view()),
    path("api/v1/test/numbers/", NumbersView.as_view()),
    path("", include("registry.urls")),
]

ECHO = "/api/v1/test/echo/"


def assert_error(response, status: int, code: str, fields: dict | None = None) -> dict:
    """The response is the error body of `status` and `code`, its request id the header's."""
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"error", "request_id"}
    assert set(body["error"]) == {"status", "code", "message", "fields"}
    assert body["error"]["status"] == status
    assert body["error"]["code"] == code
    assert body["error"]["code"] in ERROR_CODES
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert body["error"]["fields"] == (fields or {})
    assert body["request_id"] == response[REQUEST_ID_HEADER]
    return body


# -- 400 -----------------------------------------------------------------------------------------

def test_malformed_json_is_a_400(client):
    for raw in ['{"name": "x", ', "[1, 2", "NaN-ish", '{"a": "\\ud800"']:
        response = client.post(ECHO, raw, content_type="application/json")
        assert_error(response, 400, "malformed_request")


def test_invalid_input_is_a_400_with_its_fields(client):
    response = client.post(ECHO, {"name": "x" * 11, "count": -1,
                                  "items": [{"dose": "1.5"}, {"dose": "abc"}]},
                           content_type="application/json")
    body = assert_error(response, 400, "validation_failed", fields={
        "name": ["Ensure this field has no more than 10 characters."],
        "count": ["Ensure this value is greater than or equal to 0."],
        "items.1.dose": ["A valid number is required."],
    })
    assert body["error"]["message"].startswith("name: Ensure this field")
    response = client.post(ECHO, ["not", "an", "object"], content_type="application/json")
    assert_error(response, 400, "validation_failed",
                 fields={"__all__": ["Invalid data. Expected a dictionary, but got list."]})
    ok = client.post(ECHO, {"name": "ok", "count": 1}, content_type="application/json")
    assert ok.status_code == 201 and ok.json() == {"name": "ok"}


def test_detail_fields_flattens_nested_input():
    assert detail_fields({"a": {"b": ["x"]}, "c": [{}, {"d": ["y", "z"]}], "e": "w"}) == {
        "a.b": ["x"], "c.1.d": ["y", "z"], "e": ["w"]}
    assert detail_fields(["only"]) == {"__all__": ["only"]}


def test_a_nul_character_under_api_is_a_400_in_the_error_body(client):
    response = client.get("/api/v1/me/?q=a%00b")
    body = assert_error(response, 400, "bad_request")
    assert "NUL" in body["error"]["message"]


# -- the registry's domain errors -----------------------------------------------------------------

def test_domain_errors_become_the_error_body(client):
    assert_error(client.get("/api/v1/test/domain/validation/"), 400, "validation_failed",
                 fields={"grade": ["Grade 6 does not exist."],
                         "__all__": ["Nothing was written."]})
    body = assert_error(client.get("/api/v1/test/domain/not-permitted/"), 403,
                        "permission_denied")
    assert body["error"]["message"] == "Only a monitor may lock a record."
    assert_error(client.get("/api/v1/test/domain/stale/"), 409, "stale_edit")
    body = assert_error(client.get("/api/v1/test/domain/http404/"), 404, "not_found")
    assert body["error"]["message"] == "No release matches the given query."
    assert_error(client.get("/api/v1/test/domain/django-denied/"), 403, "permission_denied")


# -- 401, 403, 404, 405, 406, 415, 429 ---------------------------------------------------------

def test_401_carries_the_bearer_challenge(client):
    response = client.get("/api/v1/me/")
    assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'


def test_unknown_paths_under_api_are_404_in_the_error_body(client, ivan):
    for url in ["/api/v1/nope", "/api/v1/nope/", "/api/nope/", "/api/", "/api/v2/me/",
                "/api/v1/test/plain-404/"]:
        assert_error(client.get(url), 404, "not_found")
    client.force_login(ivan)
    assert_error(client.get("/api/v1/nope/"), 404, "not_found")
    assert_error(client.post("/api/v1/nope/", {}, content_type="application/json"), 404,
                 "not_found")
    # Outside /api/ Django's own pages are untouched.
    page = client.get("/no-such-page/")
    assert page.status_code == 404 and page["Content-Type"].startswith("text/html")


def test_a_method_not_allowed_is_a_405_with_allow(client, ivan):
    client.force_login(ivan)
    response = client.delete("/api/v1/me/")
    body = assert_error(response, 405, "method_not_allowed")
    assert "DELETE" in body["error"]["message"]
    assert "GET" in response["Allow"]


def test_an_unacceptable_format_is_a_406(client, ivan):
    client.force_login(ivan)
    assert_error(client.get("/api/v1/me/", HTTP_ACCEPT="text/csv"), 406, "not_acceptable")


def test_a_body_that_is_not_json_is_a_415(client):
    for content_type in ["application/x-www-form-urlencoded", "text/plain", "text/csv"]:
        response = client.post(ECHO, "name=x", content_type=content_type)
        assert_error(response, 415, "unsupported_media_type")


def test_throttled_is_a_429_with_retry_after(client):
    response = client.get("/api/v1/test/throttled/")
    assert_error(response, 429, "throttled")
    assert response["Retry-After"] == "7"


# -- 413 ------------------------------------------------------------------------------------------

def test_a_body_over_the_limit_is_a_413_before_it_is_read(client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    big = '{"name": "' + "x" * 2000 + '", "count": 1}'
    assert_error(client.post(ECHO, big, content_type="application/json"), 413,
                 "request_too_large")
    assert_error(client.post(ECHO, "name=" + "x" * 2000,
                             content_type="application/x-www-form-urlencoded"),
                 413, "request_too_large")
    small = client.post(ECHO, {"name": "ok", "count": 1}, content_type="application/json")
    assert small.status_code == 201


def test_the_default_limit_applies(client, settings):
    body = b'{"name": "' + b"x" * settings.DATA_UPLOAD_MAX_MEMORY_SIZE + b'"}'
    assert_error(client.post(ECHO, body, content_type="application/json"), 413,
                 "request_too_large")


# -- 500 ------------------------------------------------------------------------------------------

def test_a_server_error_is_a_500_in_the_error_body(caplog):
    client = Client(raise_request_exception=False)
    for url in ["/api/v1/test/boom/", "/api/v1/test/plain-boom/"]:
        response = client.get(url, HTTP_X_REQUEST_ID="trace-500")
        body = assert_error(response, 500, "server_error")
        assert body["request_id"] == "trace-500"
        assert "a bug" not in response.content.decode()  # no detail of the failure leaks
    # Django logged the traceback; the request id is logged beside it.
    assert any(r.exc_info and "a bug" in str(r.exc_info[1]) for r in caplog.records)
    assert any("trace-500" in r.getMessage() for r in caplog.records)


def test_a_server_error_reaches_a_test_client_that_raises():
    with pytest.raises(RuntimeError, match="a bug"):
        Client().get("/api/v1/test/boom/")


# -- request ids -------------------------------------------------------------------------------

def test_a_sane_request_id_is_echoed(client):
    for value in ["abc-123", "A.b_c-9", "x" * 64]:
        response = client.get("/api/v1/me/", HTTP_X_REQUEST_ID=value)
        assert response[REQUEST_ID_HEADER] == value
        assert response.json()["request_id"] == value


def test_a_missing_or_insane_request_id_is_replaced(client):
    seen = set()
    for value in [None, "", "x" * 65, "a b", "<script>", "é", "a\tb"]:
        extra = {} if value is None else {"HTTP_X_REQUEST_ID": value}
        response = client.get("/api/v1/me/", **extra)
        generated = response[REQUEST_ID_HEADER]
        assert re.fullmatch(r"[0-9a-f]{32}", generated), value
        assert response.json()["request_id"] == generated
        seen.add(generated)
    assert len(seen) == 7


def test_every_response_has_a_request_id(client, ivan):
    client.force_login(ivan)
    for url in ["/api/v1/me/", "/accounts/login/", "/healthz", "/no-such-page/"]:
        assert re.fullmatch(r"[0-9a-f]{32}", client.get(url)[REQUEST_ID_HEADER]), url


# -- pagination ----------------------------------------------------------------------------------

def test_lists_are_paginated_with_a_bounded_page_size(client):
    first = client.get("/api/v1/test/numbers/").json()
    assert first["count"] == 1200 and len(first["results"]) == API_PAGE_SIZE
    assert first["previous"] is None and "page=2" in first["next"]
    big = client.get("/api/v1/test/numbers/", {"page_size": 100_000}).json()
    assert len(big["results"]) == API_PAGE_SIZE_MAX
    for bad in ["abc", "-1", "0", "NaN"]:
        response = client.get("/api/v1/test/numbers/", {"page_size": bad})
        assert response.status_code == 200 and len(response.json()["results"]) == API_PAGE_SIZE
    for page in ["999", "abc", "-1", "0"]:
        assert_error(client.get("/api/v1/test/numbers/", {"page": page}), 404, "not_found")


def test_every_status_has_a_kind():
    assert set(ERROR_FOR_STATUS) == {400, 401, 403, 404, 405, 406, 409, 413, 415, 429, 500, 503}


def test_a_status_no_kind_names_still_gets_the_body(rf):
    request = rf.get("/api/v1/anything/", HTTP_X_REQUEST_ID="r-1")
    for status, message in [(502, "Bad Gateway"), (499, "Error")]:
        assert error_body(request, status=status) == {
            "error": {"status": status, "code": "error", "message": message, "fields": {}},
            "request_id": "r-1"}
