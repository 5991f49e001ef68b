"""The partners' page (research/views/partners.py): the registry admin keeps partner
organisations, their people and their API tokens; everyone else is refused; hostile input is
a form error, never a server error.

ada is the registry admin; pat a partner, ivan an investigator, carol on the committee, alice
a clerk (tests/conftest.py).
"""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from registry.access import user_roles
from registry.models import ApiToken, Role
from registry.selectors.api_tokens import api_token_authenticate
from registry.services.api_tokens import api_token_create
from research.models import Affiliation, Organisation
from research.services.partners import partner_organisation_add, partner_person_add

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

PAGE = reverse("research:partners")


def as_(user, **kwargs) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client


@pytest.fixture
def acme(pat):
    organisation = partner_organisation_add(name="Acme Pharma", acting_user=None)
    partner_person_add(organisation=organisation, username="pat", acting_user=None)
    return organisation


def _urls(acme, pat) -> list[tuple[str, str]]:
    token = api_token_create(user=pat, name="t", scopes=["releases"], expires_days=30,
                             acting_user=None)[0]
    return [("get", PAGE),
            ("post", reverse("research:partner_organisation_add")),
            ("post", reverse("research:partner_person_add", args=[acme.pk])),
            ("post", reverse("research:partner_token_add", args=[pat.pk])),
            ("post", reverse("research:partner_token_revoke", args=[token.pk]))]


@pytest.mark.parametrize("persona", ["pat", "ivan", "carol", "alice"])
def test_only_the_registry_admin_may_use_the_page(persona, request, acme, pat):
    user = request.getfixturevalue(persona)
    client = as_(user)
    for method, url in _urls(acme, pat):
        assert getattr(client, method)(url, {"name": "X", "username": "x",
                                             "scopes": ["releases"]}).status_code == 403, url
    assert Organisation.objects.count() == 1
    assert not ApiToken.objects.filter(revoked_at__isnull=False).exists()
    assert ApiToken.objects.count() == 1


def test_without_a_login_the_page_sends_to_the_login(acme, pat):
    for method, url in _urls(acme, pat):
        response = getattr(Client(), method)(url)
        assert response.status_code == 302 and "login" in response["Location"], url


def test_actions_are_post_only_and_the_page_get_only(ada, acme, pat):
    client = as_(ada)
    for method, url in _urls(acme, pat):
        other = "post" if method == "get" else "get"
        assert getattr(client, other)(url).status_code == 405, url


def test_a_post_without_its_csrf_token_is_refused(ada):
    response = as_(ada, enforce_csrf_checks=True).post(
        reverse("research:partner_organisation_add"), {"name": "Acme Pharma"})
    assert response.status_code == 403
    assert not Organisation.objects.exists()


def test_the_page_lists_organisations_people_and_tokens(ada, acme, pat, westlake):
    token, _text = api_token_create(user=pat, name="nightly feasibility",
                                    scopes=["feasibility", "aggregates"], expires_days=90,
                                    acting_user=None)
    response = as_(ada).get(PAGE)
    assert response.status_code == 200
    page = response.content.decode()
    assert "Acme Pharma" in page and "pat" in page
    assert "Westlake University" not in page  # academic: not a partner organisation
    assert "nightly feasibility" in page and token.prefix in page
    assert "aggregates, feasibility" in page
    (row,) = response.context["organisations"]
    assert [p.user for p in row.people] == [pat]
    assert row.people[0].tokens[0].state == ApiToken.State.ACTIVE


@pytest.mark.django_db(transaction=True)
def test_the_admin_adds_an_organisation_a_partner_and_a_token_shown_once(ada):
    client = as_(ada)
    response = client.post(reverse("research:partner_organisation_add"), {"name": "Beta Bio"})
    assert response.status_code == 302
    beta = Organisation.objects.get(name="Beta Bio")
    assert beta.kind == Organisation.Kind.COMPANY

    response = client.post(reverse("research:partner_person_add", args=[beta.pk]),
                           {"username": "lin", "email": "lin@beta.example"})
    assert response.status_code == 302
    lin = Affiliation.objects.get(organisation=beta).user
    assert lin.username == "lin" and user_roles(lin) == {Role.PARTNER}
    assert not lin.has_usable_password()

    response = client.post(reverse("research:partner_token_add", args=[lin.pk]),
                           {"name": "pipeline", "scopes": ["aggregates", "scoring"],
                            "expires_days": "180"})
    assert response.status_code == 201
    text = response.context["created_text"]
    assert text in response.content.decode()
    token = api_token_authenticate(text)
    assert token is not None and token.user == lin
    assert token.scopes == ["aggregates", "scoring"]
    assert token.created_by == ada
    assert text not in client.get(PAGE).content.decode()  # shown once

    response = client.post(reverse("research:partner_token_revoke", args=[token.pk]),
                           {"reason": "laptop stolen"})
    assert response.status_code == 302
    token.refresh_from_db()
    assert token.revoked_by == ada and token.revoke_reason == "laptop stolen"
    assert api_token_authenticate(text) is None
    assert token.history.first().revoke_reason == "laptop stolen"


def test_a_scope_the_role_does_not_allow_is_refused(ada, acme, pat):
    response = as_(ada).post(reverse("research:partner_token_add", args=[pat.pk]),
                             {"name": "x", "scopes": ["requests"], "expires_days": "30"})
    assert response.status_code == 400
    assert "scopes" in response.context["failed_form"].errors
    assert not ApiToken.objects.exists()


def test_only_partners_people_and_tokens_are_acted_on(ada, acme, ivan, westlake):
    partner_person_add(organisation=acme, username="lin", acting_user=None)
    client = as_(ada)
    # ivan is no partner: his tokens are not this page's.
    assert client.post(reverse("research:partner_token_add", args=[ivan.pk]),
                       {"name": "x", "scopes": ["releases"]}).status_code == 404
    ivans = api_token_create(user=ivan, name="t", scopes=["requests"], expires_days=30,
                             acting_user=None)[0]
    assert client.post(reverse("research:partner_token_revoke",
                               args=[ivans.pk])).status_code == 404
    ivans.refresh_from_db()
    assert ivans.revoked_at is None
    assert client.post(reverse("research:partner_person_add", args=[westlake.pk]),
                       {"username": "z"}).status_code == 404
    assert client.post(reverse("research:partner_person_add", args=[999999]),
                       {"username": "z"}).status_code == 404


HOSTILE = ["\x00", "a" * 5000, "", "   ", "<script>alert(1)</script>", "x\x00y"]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_input_is_a_form_error_never_a_server_error(ada, acme, pat, value):
    client = as_(ada)
    before = (Organisation.objects.count(), ApiToken.objects.count())
    urls_bodies = [
        (reverse("research:partner_organisation_add"), {"name": value}),
        (reverse("research:partner_person_add", args=[acme.pk]),
         {"username": value, "email": value}),
        (reverse("research:partner_token_add", args=[pat.pk]),
         {"name": value, "scopes": [value], "expires_days": value}),
        (reverse("research:partner_token_add", args=[pat.pk]),
         {"name": "x", "scopes": ["releases"], "expires_days": "-5"}),
        (reverse("research:partner_token_add", args=[pat.pk]),
         {"name": "x", "scopes": ["releases"], "expires_days": "9" * 40}),
    ]
    for url, body in urls_bodies:
        response = client.post(url, body)
        assert response.status_code < 500, (url, body)
    token = api_token_create(user=pat, name="t", scopes=["releases"], expires_days=30,
                             acting_user=None)[0]
    response = client.post(reverse("research:partner_token_revoke", args=[token.pk]),
                           {"reason": value * 100 if value.strip() else value})
    assert response.status_code < 500
    token.refresh_from_db()
    if response.status_code == 400:
        assert token.revoked_at is None
    created = (Organisation.objects.count(), ApiToken.objects.count() - 1)
    # "<script>..." is a lawful organisation name (shown escaped); nothing else was written.
    assert created[1] == before[1]
    assert created[0] in {before[0], before[0] + 1}
    assert "<script>alert(1)</script>" not in client.get(PAGE).content.decode()


# -- the command ----------------------------------------------------------------------------


def test_the_command_creates_lists_and_revokes(capsys):
    from django.core.management import call_command

    call_command("partner_token", "create", "--organisation", "Gamma Labs", "--user", "gus",
                 "--scopes", "aggregates,feasibility", "--expires", "90")
    text = capsys.readouterr().out.strip()
    token = api_token_authenticate(text)
    assert token is not None and token.user.username == "gus"
    assert token.user.affiliation.organisation.name == "Gamma Labs"
    assert token.user.affiliation.organisation.kind == Organisation.Kind.COMPANY
    assert user_roles(token.user) == {Role.PARTNER}
    call_command("partner_token", "list")
    listed = capsys.readouterr().out
    assert "Gamma Labs" in listed and token.prefix in listed and "active" in listed
    call_command("partner_token", "revoke", token.prefix, "--reason", "left the company")
    token.refresh_from_db()
    assert token.revoke_reason == "left the company" and token.revoked_at is not None
    call_command("partner_token", "list", "--organisation", "Gamma Labs")
    assert "revoked (left the company)" in capsys.readouterr().out


def test_the_command_writes_nothing_when_the_token_is_refused():
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="scope"):
        call_command("partner_token", "create", "--organisation", "Delta", "--user", "dee",
                     "--scopes", "requests")
    assert not Organisation.objects.filter(name="Delta").exists()
    assert not Affiliation.objects.filter(user__username="dee").exists()


def test_the_research_home_links_the_page_for_the_admin_only(ada, ivan):
    assert PAGE in as_(ada).get(reverse("research:home")).content.decode()
    assert PAGE not in as_(ivan).get(reverse("research:home")).content.decode()
