"""The OpenAPI schema (valid, with the bearer scheme and the error body) and its Swagger UI,
served from the offline assets under the registry's Content-Security-Policy."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from django.test import Client
from drf_spectacular.validation import validate_schema

from registry.api.errors import ERROR_CODES, ERROR_FOR_STATUS
from registry.api.schema import STATUS_DESCRIPTIONS, error_responses
from registry.api.scopes import Scope

pytestmark = pytest.mark.postgres

SCHEMA = "/api/v1/schema/"
DOCS = "/api/v1/docs/"


@pytest.fixture
def schema(client, db):
    response = client.get(SCHEMA)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi")
    return yaml.safe_load(response.content)


def test_the_schema_is_valid_openapi(schema):
    validate_schema(schema)  # raises on an invalid document
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["version"] == "v1"


def test_the_schema_documents_me_with_its_errors(schema):
    me = schema["paths"]["/api/v1/me/"]["get"]
    assert me["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Me"}
    assert me["responses"]["401"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Error"}
    assert {"bearerAuth": []} in me["security"]
    # The schema and docs endpoints themselves are not API operations.
    assert "/api/v1/me/" in schema["paths"]
    assert not {"/api/v1/schema/", "/api/v1/docs/"} & set(schema["paths"])


def test_the_schema_has_the_bearer_scheme_and_the_error_body(schema):
    assert schema["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "bearerFormat": "rwe_<prefix>_<secret>",
        "description": "An API token (docs/api.md): `Authorization: Bearer <token>`."}
    components = schema["components"]["schemas"]
    assert components["Error"]["required"] == ["error", "request_id"]
    assert components["ErrorDetail"]["properties"]["code"]["allOf"] == [
        {"$ref": "#/components/schemas/ErrorCode"}]
    assert components["ErrorCode"]["enum"] == ERROR_CODES
    assert components["Scope"]["enum"] == ["requests", "releases", "aggregates", "feasibility",
                                           "scoring"]


def test_the_schema_as_json_and_in_chinese(client, db):
    response = client.get(SCHEMA, {"format": "json"})
    assert response.status_code == 200
    assert "/api/v1/me/" in json.loads(response.content)["paths"]
    chinese = client.get(SCHEMA, {"lang": "zh-hans"})
    assert chinese.status_code == 200


def test_odd_schema_parameters_are_refused_or_ignored(client, db):
    response = client.get(SCHEMA, {"lang": "x" * 10_000})
    assert response.status_code == 400
    assert response.json()["error"]["fields"]["lang"]
    assert client.get(DOCS, {"lang": "klingon"}).status_code == 400
    # The version is the URL's: a ?version= does not reach the Content-Disposition header.
    response = client.get(SCHEMA, {"version": "a\r\nX-Injected: 1"})
    assert response.status_code == 200
    assert "X-Injected" not in response
    assert client.get(SCHEMA, {"format": "csv"}).json()["error"]["code"] == "not_found"


def test_every_error_status_is_described_for_endpoint_authors():
    assert set(ERROR_FOR_STATUS) <= set(STATUS_DESCRIPTIONS)
    responses = error_responses(400, 401, 403, 404, 429)
    assert list(responses) == [400, 401, 403, 404, 429]
    with pytest.raises(ValueError, match="418"):
        error_responses(418)


@pytest.fixture
def static_client(settings, db):
    """A client whose WhiteNoise serves the apps' static files as `collectstatic` would
    gather them (the middleware reads the setting when a new client first loads it)."""
    settings.WHITENOISE_USE_FINDERS = True
    return Client()


def test_the_docs_page_and_its_assets_are_served_under_the_policy(static_client):
    page = static_client.get(DOCS)
    assert page.status_code == 200
    html = page.content.decode()
    policy = page["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "unsafe-eval" not in policy
    assert re.search(r"img-src 'self' data:", policy)
    # Nothing inline: every script is a file, no style element.
    scripts = re.findall(r"<script([^>]*)>", html)
    assert len(scripts) == 3 and all('src="' in attrs for attrs in scripts)
    assert "<style" not in html and "style=" not in html
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert len(assets) == 5, assets  # favicon, stylesheet, two bundles, the start script
    for url in assets:
        response = static_client.get(url.replace("&amp;", "&"))
        assert response.status_code == 200, url
        content = b"".join(response.streaming_content) if response.streaming else \
            response.content
        assert len(content) > 100, url
        if "script=" in url:
            assert response["Content-Type"].startswith("application/javascript")
            assert b"SwaggerUIBundle" in content and b"/api/v1/schema/" in content
    # The rest of the registry keeps its strict policy.
    login = static_client.get("/accounts/login/")
    assert "data:" not in login["Content-Security-Policy"]


def test_the_docs_are_offline(static_client):
    html = static_client.get(DOCS).content.decode()
    assert "http://" not in html and "https://" not in html


def test_the_api_documentation_names_every_scope_and_error_code():
    text = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    for scope in Scope.values:
        assert f"| `{scope}` |" in text, scope
    for code in ERROR_CODES:
        if code != "error":  # a status no kind names; not one the registry answers itself
            assert f"| `{code}` |" in text, code
