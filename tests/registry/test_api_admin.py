"""API tokens in the Django admin: the registry admin's alone; created through the service with
the text shown once (and stored nowhere), revoked through the service, never edited, and the
digest shown nowhere."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Permission

from registry.api.tokens import TOKEN_PATTERN, token_digest
from registry.models import ApiToken
from registry.services.api_tokens import api_token_create

pytestmark = pytest.mark.postgres

TOKENS = "/admin/registry/apitoken/"
ADD = TOKENS + "add/"


def _token_in(html: str) -> str:
    found = re.findall(r"rwe_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", html)
    assert len(found) == 1, found
    return found[0]


@pytest.fixture
def pat_token(pat):
    return api_token_create(user=pat, name="analytics", scopes=["aggregates"],
                            acting_user=None)


@pytest.fixture
def mona_staff(mona):
    """Monitor of site A, made staff with every Django permission of the registry."""
    mona.is_staff = True
    mona.save(update_fields=["is_staff"])
    mona.user_permissions.add(*Permission.objects.filter(content_type__app_label="registry"))
    return mona


def test_only_the_registry_admin_sees_tokens(client, mona_staff, ada, pat_token):
    token, _ = pat_token
    client.force_login(mona_staff)
    for url in [TOKENS, ADD, f"{TOKENS}{token.pk}/change/"]:
        assert client.get(url).status_code == 403, url
    assert client.post(ADD, {"user": mona_staff.pk, "name": "x", "scopes": ["aggregates"]}
                       ).status_code == 403
    assert ApiToken.objects.count() == 1
    client.force_login(ada)
    assert client.get(TOKENS).status_code == 200
    assert client.get(ADD).status_code == 200


def test_the_admin_creates_a_token_and_shows_it_once(client, ada, pat):
    client.force_login(ada)
    response = client.post(ADD, {"user": pat.pk, "name": "warehouse",
                                 "scopes": ["aggregates", "scoring"], "expires_days": "30"})
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    text = _token_in(response.text)
    assert TOKEN_PATTERN.fullmatch(text)
    token = ApiToken.objects.get()
    assert (token.user, token.name, token.scopes, token.created_by) == (
        pat, "warehouse", ["aggregates", "scoring"], ada)
    assert (token.expires_at - token.created_at).days == 30
    assert token.digest == token_digest(text)
    assert token.history.get().history_user == ada
    # Shown on that page only: the message was read there, so no later page (nor the session
    # or a cookie) holds it.
    assert text not in str(client.cookies)
    later = client.get(TOKENS)
    assert later.status_code == 200 and text not in later.text
    assert client.get("/api/v1/me/", HTTP_AUTHORIZATION=f"Bearer {text}").status_code == 200


def test_the_admin_refuses_what_the_service_refuses_at_the_field(client, ada, pat, alice):
    client.force_login(ada)
    cases = [
        ({"user": pat.pk, "name": "x", "scopes": ["requests"]}, "scopes"),  # not a partner's
        ({"user": alice.pk, "name": "x", "scopes": ["aggregates"]}, "scopes"),  # a clerk
        ({"user": pat.pk, "name": "x", "scopes": ["everything"]}, "scopes"),
        ({"user": pat.pk, "name": "x", "scopes": []}, "scopes"),
        ({"user": pat.pk, "name": "x" * 10_000, "scopes": ["aggregates"]}, "name"),
        ({"user": pat.pk, "name": "   ", "scopes": ["aggregates"]}, "name"),
        ({"user": pat.pk, "name": "x", "scopes": ["aggregates"], "expires_days": "0"},
         "expires_days"),
        ({"user": pat.pk, "name": "x", "scopes": ["aggregates"], "expires_days": "731"},
         "expires_days"),
        ({"user": pat.pk, "name": "x", "scopes": ["aggregates"], "expires_days": "NaN"},
         "expires_days"),
        ({"user": pat.pk, "name": "x", "scopes": ["aggregates"], "expires_days": "9" * 40},
         "expires_days"),
        ({"user": "999999999", "name": "x", "scopes": ["aggregates"]}, "user"),
        ({"user": "abc", "name": "x", "scopes": ["aggregates"]}, "user"),
    ]
    for data, field in cases:
        response = client.post(ADD, data)
        assert response.status_code == 200, (data, field)
        assert field in response.context["adminform"].form.errors, (field, response.context[
            "adminform"].form.errors)
    assert client.post(ADD, {"user": pat.pk, "name": "a\x00b", "scopes": ["aggregates"]}
                       ).status_code == 400  # RefuseNulMiddleware
    pat.is_active = False
    pat.save(update_fields=["is_active"])
    response = client.post(ADD, {"user": pat.pk, "name": "x", "scopes": ["aggregates"]})
    assert response.status_code == 200 and response.context["adminform"].form.errors
    assert not ApiToken.objects.exists()


def test_the_digest_is_shown_nowhere_and_nothing_is_edited(client, ada, pat_token):
    token, text = pat_token
    client.force_login(ada)
    for url in [TOKENS, f"{TOKENS}{token.pk}/change/", f"{TOKENS}{token.pk}/history/"]:
        page = client.get(url)
        assert page.status_code == 200, url
        assert token.digest not in page.text and text not in page.text, url
    assert token.prefix in client.get(TOKENS).text
    # View only: a change or a delete is refused and writes nothing.
    change = client.post(f"{TOKENS}{token.pk}/change/", {"name": "renamed"})
    assert change.status_code == 403
    assert client.post(f"{TOKENS}{token.pk}/delete/", {"post": "yes"}).status_code == 403
    assert ApiToken.objects.get(pk=token.pk).name == "analytics"
    assert client.get(f"{TOKENS}abc/change/").status_code == 404
    assert client.get(f"{TOKENS}999999/change/").status_code == 404


def test_hostile_query_parameters_on_the_token_list(client, ada, pat_token):
    client.force_login(ada)
    assert client.get(TOKENS, {"q": "a\x00"}).status_code == 400
    for query in ["o=abc", "o=99", "p=999999", "q=" + "x" * 100_000, "revoked_at__gte=NaN",
                  "expires_at__lt=9999-99-99", "_to_field=digest"]:
        assert client.get(f"{TOKENS}?{query}").status_code < 500, query


@pytest.mark.django_db(transaction=True)
def test_the_admin_revokes_tokens_through_the_service(client, ada, pat):
    kept, _ = api_token_create(user=pat, name="kept", scopes=["aggregates"], acting_user=ada)
    gone, gone_text = api_token_create(user=pat, name="gone", scopes=["aggregates"],
                                       acting_user=ada)
    client.force_login(ada)
    response = client.post(TOKENS, {"action": "revoke", "_selected_action": [gone.pk]})
    assert response.status_code == 302
    revoked = ApiToken.objects.get(pk=gone.pk)
    assert revoked.revoked_by == ada and revoked.revoked_at is not None
    latest = revoked.history.latest("history_date", "history_id")
    assert (latest.history_user, latest.history_change_reason) == (ada, "API token revoked")
    assert ApiToken.objects.get(pk=kept.pk).revoked_at is None
    assert client.get("/api/v1/me/", HTTP_AUTHORIZATION=f"Bearer {gone_text}").status_code == 401
