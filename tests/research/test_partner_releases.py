"""A partner's releases (research.selectors.requests): only of approved commercial requests of
their own organisation on which they are named (requester or team), on the API and the web,
with the same download record and expiry; another's release is a 404, never a 403.

pat works at Acme Pharma, paula at Beta Bio (both partners); ivan, an investigator, is also
on some teams (his view is unchanged: every release of his teams).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pytest
from django.test import Client
from django.utils import timezone

from registry.models import Role
from registry.services.api_tokens import api_token_create
from research.models import DataRequest, Download, Organisation, Purpose, Release, ReleaseFile
from research.selectors.requests import on_team, releases_visible
from research.services.requests import affiliation_set, organisation_upsert
from research.storage import release_storage
from tests.conftest import _person

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

V1 = "/api/v1"
FILE = "cycles.csv"


@pytest.fixture
def paula(db):
    return _person("paula", Role.PARTNER)


@pytest.fixture
def orgs(pat, paula):
    acme = organisation_upsert(name="Acme Pharma", kind=Organisation.Kind.COMPANY,
                               acting_user=None)
    beta = organisation_upsert(name="Beta Bio", kind=Organisation.Kind.COMPANY,
                               acting_user=None)
    affiliation_set(user=pat, organisation=acme, acting_user=None)
    affiliation_set(user=paula, organisation=beta, acting_user=None)
    return {"acme": acme, "beta": beta}


def _release(requester, organisation, *, purpose=Purpose.COMMERCIAL,
             status=DataRequest.Status.APPROVED, team=(), expires_in_days=30) -> Release:
    request = DataRequest.objects.create(
        requester=requester, organisation=organisation, title="t", question="q",
        protocol_summary="p", purpose=purpose, access_days=365, status=status, revision=1)
    request.team.set(team)
    release = Release.objects.create(
        request=request, number=1, status=Release.Status.READY, snapshot_at=timezone.now(),
        key="0" * 64, requested_by=requester,
        expires_at=timezone.now() + dt.timedelta(days=expires_in_days))
    content = b"pseudonym,cycle\nabc,1\n"
    folder = Path(release_storage().path(str(release.pk)))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / FILE).write_bytes(content)
    ReleaseFile.objects.create(release=release, name=FILE, bytes=len(content),
                               sha256=hashlib.sha256(content).hexdigest(), rows=1)
    return release


@pytest.fixture
def releases(orgs, pat, paula, ivan):
    acme, beta = orgs["acme"], orgs["beta"]
    return {
        # pat's own approved commercial request: his.
        "own": _release(pat, acme),
        # Acme's request with pat in the team: his.
        "team": _release(paula, acme, team=[pat]),
        # Acme's request without pat: not his.
        "colleague": _release(paula, acme),
        # Beta's request, even with pat in its team: not his.
        "other_org": _release(paula, beta, team=[pat]),
        # An academic request of Acme with pat named: not a partner's.
        "academic": _release(ivan, acme, purpose=Purpose.ACADEMIC, team=[pat]),
        # Acme's request, no longer approved (sent back for revision): not his.
        "unapproved": _release(pat, acme, status=DataRequest.Status.REVISION),
        # Acme's with conditions: his.
        "conditions": _release(pat, acme, status=DataRequest.Status.APPROVED_CONDITIONS),
    }


PATS = {"own", "team", "conditions"}


def _api(user) -> Client:
    text = api_token_create(user=user, name="t", scopes=["releases"], expires_days=30,
                            acting_user=None)[1]
    client = Client()
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {text}"
    return client


def test_a_partner_sees_only_his_organisation_s_approved_commercial_releases(pat, releases):
    visible = set(releases_visible(pat).values_list("pk", flat=True))
    assert visible == {releases[name].pk for name in PATS}
    for name, release in releases.items():
        assert on_team(pat, release.request) == (name in PATS), name


def test_the_api_lists_and_serves_the_partner_s_releases_only(pat, releases):
    api = _api(pat)
    listed = api.get(f"{V1}/releases/").json()
    assert {r["id"] for r in listed["results"]} == {releases[n].pk for n in PATS}
    for name, release in releases.items():
        detail = api.get(f"{V1}/releases/{release.pk}/")
        file = api.get(f"{V1}/releases/{release.pk}/files/{FILE}")
        if name in PATS:
            assert detail.status_code == 200, name
            assert file.status_code == 200, name
            assert b"".join(file.streaming_content).startswith(b"pseudonym")
        else:
            assert detail.status_code == 404, name  # never 403: it does not say it exists
            assert file.status_code == 404, name
            assert detail.json()["error"]["code"] == "not_found"
    downloads = Download.objects.filter(user=pat)
    assert {d.release_id for d in downloads} == {releases[n].pk for n in PATS}
    assert set(downloads.values_list("channel", flat=True)) == {Download.Channel.API}


def test_the_web_applies_the_same_rule(pat, releases):
    web = Client()
    web.force_login(pat)
    for name, release in releases.items():
        response = web.get(f"/research/releases/{release.pk}/files/{FILE}")
        assert response.status_code == (200 if name in PATS else 404), name
    assert Download.objects.filter(user=pat, channel=Download.Channel.WEB).count() == len(PATS)


def test_an_expired_release_is_refused_and_not_recorded(pat, orgs):
    release = _release(pat, orgs["acme"], expires_in_days=-1)
    response = _api(pat).get(f"{V1}/releases/{release.pk}/files/{FILE}")
    assert response.status_code == 400
    assert "access period" in response.json()["error"]["message"]
    assert not Download.objects.filter(release=release).exists()


def test_another_partner_sees_his_own_and_nothing_of_pat_s(paula, releases):
    visible = set(releases_visible(paula).values_list("pk", flat=True))
    # paula requested "colleague" and "team" for Acme while she works at Beta: not hers now.
    assert visible == {releases["other_org"].pk}
    api = _api(paula)
    for name in PATS:
        assert api.get(f"{V1}/releases/{releases[name].pk}/").status_code == 404


def test_a_partner_without_an_organisation_sees_no_release(pat, releases):
    pat.affiliation.delete()
    assert not releases_visible(pat).exists()
    assert _api(pat).get(f"{V1}/releases/").json()["count"] == 0


def test_an_investigator_s_view_is_unchanged(ivan, releases):
    assert set(releases_visible(ivan).values_list("pk", flat=True)) == {
        releases["academic"].pk}
