"""The research pages over HTTP (PostgreSQL): which persona gets which page, every step of the
committee's work posted as a browser would (status and database after each), refusals that
change nothing, hostile input on the forms and the feasibility endpoint, and the pages in
Chinese."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.utils import timezone

from research.models import (
    Affiliation,
    DataRequest,
    Decision,
    Download,
    Organisation,
    Recusal,
    Release,
    SiteParticipation,
    Vote,
)
from research.services.committee import decision_record, participation_answer, vote_cast
from research.services.releases import release_build, release_request
from research.services.requests import request_create, request_submit
from tests.research.conftest import submitted_patient

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("vocabulary", "committee_rules")]

VARIABLES = ["patient.sex", "patient.age_at_diagnosis", "diagnosis.cancer",
             "diagnosis.stage_group", "cycle.start_date", "adverseevent.grade"]
PERSONAS = ["ivan", "pat", "carol", "cleo", "chad", "priya", "sam", "alice", "mona", "ada"]
FEASIBILITY = "/research/requests/feasibility"


def form_data(**overrides) -> dict:
    """The request form as a browser posts it."""
    data = {"title": "Neutropenia under platinum doublets", "question": "How often?",
            "protocol_summary": "Retrospective cohort.", "purpose": "academic",
            "access_days": "365", "cancer": "C34", "diagnosis_year_from": "2018",
            "diagnosis_year_to": "", "stage_groups": "III, IV", "chemotherapy": "on",
            "sites": ["SITE-A", "SITE-B"], "variables": VARIABLES, "team": ""}
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def draft(user, **overrides):
    fields = {"title": "Neutropenia under platinum doublets", "question": "How often?",
              "protocol_summary": "Retrospective cohort.", "purpose": "academic",
              "access_days": 365, "criteria": {"cancer": ["C34"]}, "variables": VARIABLES,
              "site_codes": ["SITE-A", "SITE-B"], "team": []}
    fields.update(overrides)
    return request_create(acting_user=user, **fields)


@pytest.fixture
def people(request):
    """Every persona, by name."""
    return {name: request.getfixturevalue(name) for name in PERSONAS}


@pytest.fixture
def cohort(site_a, site_b, alice, bob):
    return [submitted_patient(site_a, alice), submitted_patient(site_b, bob)]


@pytest.fixture
def drafted(ivan, cohort):
    return draft(ivan)


@pytest.fixture
def submitted(ivan, cohort):
    return request_submit(request=draft(ivan), acting_user=ivan)


@pytest.fixture
def approved(submitted, carol, cleo, chad):
    vote_cast(request=submitted, acting_user=carol, choice="approve")
    vote_cast(request=submitted, acting_user=cleo, choice="approve")
    decision_record(request=submitted, acting_user=chad,
                    approved_quasi_identifiers=["patient.sex"])
    submitted.refresh_from_db()
    return submitted


def as_(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


# Who gets which page.

COMMITTEE = {"carol", "cleo", "chad"}
REQUESTERS = {"ivan", "pat"}


def _expected(page: str, persona: str, state: str) -> int:
    if page in ("home", "catalog"):
        return 200
    if page in ("new", "feasibility"):
        return 200 if persona in REQUESTERS else 403
    sees = persona in ("ivan", "ada") or (persona in COMMITTEE and state != "draft") or (
        persona in ("priya", "sam") and state == "approved")
    if not sees:
        return 404
    if page == "detail":
        return 200
    # edit: the requester's, while a draft (after: back to the request with a message)
    if persona != "ivan":
        return 403
    return 200 if state == "draft" else 302


@pytest.mark.parametrize("state", ["draft", "submitted", "approved"])
def test_every_page_for_every_persona(request, people, state):
    data_request = request.getfixturevalue({"draft": "drafted", "submitted": "submitted",
                                            "approved": "approved"}[state])
    pages = {"home": "/research/", "catalog": "/research/catalog/",
             "new": "/research/requests/new/",
             "feasibility": f"{FEASIBILITY}?purpose=academic&sites=SITE-A&cancer=C34",
             "detail": f"/research/requests/{data_request.pk}/",
             "edit": f"/research/requests/{data_request.pk}/edit/"}
    problems = []
    for persona, user in people.items():
        client = as_(user)
        for page, url in pages.items():
            status = client.get(url).status_code
            if status != _expected(page, persona, state):
                problems.append(f"{persona} {page}: {status}, expected "
                                f"{_expected(page, persona, state)}")
    anonymous = Client()
    for page, url in pages.items():
        response = anonymous.get(url)
        if response.status_code != 302 or "/accounts/login/" not in response["Location"]:
            problems.append(f"anonymous {page}: {response.status_code}")
    assert not problems, "\n".join(problems)


def test_another_persons_request_is_not_found_on_any_of_its_urls(pat, drafted, submitted):
    client = as_(pat)
    for pk in (drafted.pk, submitted.pk, 10**9):
        base = f"/research/requests/{pk}/"
        assert client.get(base).status_code == 404
        assert client.get(base + "edit/").status_code == 404
        for action in ("submit/", "vote/", "conflict/", "decision/", "sites/1/answer/"):
            assert client.post(base + action, {"choice": "approve"}).status_code == 404, action
    assert DataRequest.objects.get(pk=drafted.pk).status == DataRequest.Status.DRAFT
    assert not Vote.objects.exists()


def test_the_research_link_is_shown_to_the_roles_that_use_it(people):
    for persona, user in people.items():
        shown = 'href="/research/"' in as_(user).get("/").text
        assert shown == (persona not in ("alice", "mona")), persona


def test_the_home_page_shows_each_role_its_work(people, approved, submitted, ivan, chad,
                                                priya, alice):
    second = request_submit(request=draft(ivan, title="Second study"), acting_user=ivan)
    mine = as_(ivan).get("/research/")
    assert approved.reference in mine.text and second.reference in mine.text
    assert "Approved" in mine.text and "Under review" in mine.text
    queue = as_(chad).get("/research/")
    assert second.reference in queue.text and "to vote" in queue.text
    assert "0 of 2 needed" in queue.text and "no quorum yet" in queue.text
    vote_cast(request=second, acting_user=people["carol"], choice="approve")
    vote_cast(request=second, acting_user=people["cleo"], choice="approve")
    assert "ready to decide" in as_(chad).get("/research/").text
    carol_home = as_(people["carol"]).get("/research/")
    assert "Approve" in carol_home.text and "to vote" not in carol_home.text
    site = as_(priya).get("/research/")
    assert approved.reference in site.text and "Awaiting your answer" in site.text
    nothing = as_(alice).get("/research/")
    assert nothing.status_code == 200 and 'id="nothing-here"' in nothing.text


# Every step, posted as a browser would, outside the test's transaction.

@pytest.mark.django_db(transaction=True)
def test_a_request_from_draft_to_opt_in_over_http(vocabulary, committee_rules, site_a, site_b,
                                                  alice, bob, ivan, pat, carol, cleo, chad,
                                                  priya, sam):
    submitted_patient(site_a, alice)
    submitted_patient(site_b, bob)
    client = as_(ivan)
    created = client.post("/research/requests/new/", form_data(team="pat"))
    assert created.status_code == 302
    data_request = DataRequest.objects.get()
    assert created["Location"] == f"/research/requests/{data_request.pk}/"
    assert data_request.criteria == {"cancer": ["C34"], "chemotherapy": True,
                                     "diagnosis_year_from": 2018, "stage_groups": ["III", "IV"]}
    assert data_request.variables == VARIABLES
    assert list(data_request.sites.values_list("code", flat=True).order_by("code")) == [
        "SITE-A", "SITE-B"]
    assert list(data_request.team.all()) == [pat]
    assert data_request.status == DataRequest.Status.DRAFT

    edited = client.post(f"/research/requests/{data_request.pk}/edit/",
                         form_data(title="Neutropenia by regimen", stage_groups="",
                                   diagnosis_year_from="", chemotherapy=None, team="pat"))
    assert edited.status_code == 302
    data_request.refresh_from_db()
    assert data_request.title == "Neutropenia by regimen"
    assert data_request.criteria == {"cancer": ["C34"]}
    assert list(data_request.team.all()) == [pat]

    page = client.get(f"/research/requests/{data_request.pk}/")
    assert 'id="submit-request"' in page.text and 'id="vote-form"' not in page.text
    response = client.post(f"/research/requests/{data_request.pk}/submit/")
    assert response.status_code == 302
    data_request.refresh_from_db()
    assert (data_request.status, data_request.revision) == (DataRequest.Status.SUBMITTED, 1)
    assert "Submitted to the committee." in messages_of(client.get(response["Location"]))

    for member, choice, comment in [(carol, "approve", ""),
                                    (cleo, "approve_conditions", "Site tiers only.")]:
        member_client = as_(member)
        assert 'id="vote-form"' in member_client.get(
            f"/research/requests/{data_request.pk}/").text
        response = member_client.post(f"/research/requests/{data_request.pk}/vote/",
                                      {"choice": choice, "comment": comment})
        assert response.status_code == 302
        assert Vote.objects.get(request=data_request, member=member).choice == choice

    chair = as_(chad)
    page = chair.get(f"/research/requests/{data_request.pk}/")
    assert 'id="decision-form"' in page.text and "Quorate" in page.text
    response = chair.post(f"/research/requests/{data_request.pk}/decision/", {
        "conditions": "Site tiers only.", "approved_quasi_identifiers": ["patient.sex"],
        "k_anonymity": "3"})
    assert response.status_code == 302
    decision = Decision.objects.get(request=data_request)
    assert (decision.outcome, decision.approved_quasi_identifiers, decision.k_anonymity) == (
        "approve_conditions", ["patient.sex"], 3)
    data_request.refresh_from_db()
    assert data_request.status == DataRequest.Status.APPROVED_CONDITIONS

    at_a = SiteParticipation.objects.get(request=data_request, site=site_a)
    at_b = SiteParticipation.objects.get(request=data_request, site=site_b)
    response = as_(priya).post(f"/research/requests/{data_request.pk}/sites/{at_a.pk}/answer/",
                               {f"p{at_a.pk}-answer": "opted_in", f"p{at_a.pk}-comment": ""})
    assert response.status_code == 302
    response = as_(sam).post(f"/research/requests/{data_request.pk}/sites/{at_b.pk}/answer/",
                             {f"p{at_b.pk}-answer": "declined",
                              f"p{at_b.pk}-comment": "Not this year."})
    assert response.status_code == 302
    at_a.refresh_from_db()
    at_b.refresh_from_db()
    assert (at_a.answer, at_a.answered_by) == (SiteParticipation.Answer.OPTED_IN, priya)
    assert (at_b.answer, at_b.comment) == (SiteParticipation.Answer.DECLINED, "Not this year.")
    page = client.get(f"/research/requests/{data_request.pk}/")
    assert "Not this year." in page.text and "sam" in page.text  # who declined is shown
    assert "Site tiers only." in page.text

    # The release: queued, built by the (eager) task once the request commits, downloaded.
    assert 'id="request-release"' in page.text
    response = client.post(f"/research/requests/{data_request.pk}/releases/")
    release = Release.objects.get(request=data_request)
    assert response.status_code == 302
    assert response["Location"] == f"/research/releases/{release.pk}/"
    assert (release.status, release.requested_by) == (Release.Status.READY, ivan)
    page = client.get(response["Location"])
    assert f'href="/research/releases/{release.pk}/files/codebook.csv"' in page.text
    codebook = release.files.get(name="codebook.csv")
    assert codebook.sha256 in page.text
    # pat is a partner: an academic request's release is not his, team or not.
    assert as_(pat).get(f"/research/releases/{release.pk}/files/codebook.csv").status_code == 404
    response = as_(ivan).get(f"/research/releases/{release.pk}/files/codebook.csv")
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="codebook.csv"'
    body = b"".join(response.streaming_content)
    assert hashlib.sha256(body).hexdigest() == codebook.sha256
    download = Download.objects.get()
    assert (download.user, download.file, download.channel) == (ivan, codebook, "web")
    assert "codebook.csv" in client.get(f"/research/releases/{release.pk}/").text


def test_a_declared_conflict_is_recorded_and_withdraws_the_vote(submitted, carol):
    client = as_(carol)
    vote_cast(request=submitted, acting_user=carol, choice="approve")
    response = client.post(f"/research/requests/{submitted.pk}/conflict/",
                           {"statement": "I consult for the sponsor."})
    assert response.status_code == 302
    recusal = Recusal.objects.get(request=submitted, member=carol)
    assert (recusal.reason, recusal.statement) == ("declared", "I consult for the sponsor.")
    assert not Vote.objects.filter(member=carol).exists()
    page = client.get(f"/research/requests/{submitted.pk}/")
    assert 'id="my-recusal"' in page.text and 'id="vote-form"' not in page.text
    assert "I consult for the sponsor." in page.text


# Refusals: no server error, the reason shown, nothing written.

def test_a_second_vote_is_refused_and_the_first_kept(submitted, carol):
    vote_cast(request=submitted, acting_user=carol, choice="approve")
    response = as_(carol).post(f"/research/requests/{submitted.pk}/vote/",
                               {"choice": "reject", "comment": "Changed my mind."})
    assert response.status_code == 400
    assert any("already voted" in m for m in messages_of(response))
    assert list(Vote.objects.values_list("member__username", "choice")) == [
        ("carol", "approve")]


def test_a_recused_member_cannot_vote(affiliated, ivan, carol, cohort):
    data_request = request_submit(request=draft(ivan), acting_user=ivan)
    client = as_(carol)
    page = client.get(f"/research/requests/{data_request.pk}/")
    assert 'id="vote-form"' not in page.text and "Same organisation as the requester" in page.text
    response = client.post(f"/research/requests/{data_request.pk}/vote/", {"choice": "approve"})
    assert response.status_code == 403
    assert any("recused" in m for m in messages_of(response))
    assert not Vote.objects.exists()


def test_a_decision_without_quorum_is_refused(submitted, carol, chad):
    vote_cast(request=submitted, acting_user=carol, choice="approve")
    response = as_(chad).post(f"/research/requests/{submitted.pk}/decision/",
                              {"conditions": "", "k_anonymity": "5"})
    assert response.status_code == 400
    assert any("No quorum" in m for m in messages_of(response))
    assert not Decision.objects.exists()
    submitted.refresh_from_db()
    assert submitted.status == DataRequest.Status.SUBMITTED


def test_a_vote_that_needs_a_reason_is_shown_again_with_the_reason_asked(submitted, cleo):
    response = as_(cleo).post(f"/research/requests/{submitted.pk}/vote/", {"choice": "reject"})
    assert response.status_code == 400
    assert "Say why" in str(response.context["vote_form"].errors["comment"])
    assert not Vote.objects.exists()


@pytest.mark.parametrize("persona, action, data", [
    ("ivan", "vote/", {"choice": "approve"}),
    ("carol", "decision/", {"k_anonymity": "5"}),
    ("ada", "vote/", {"choice": "approve"}),
    ("chad", "submit/", {}),
])
def test_a_role_that_may_not_act_is_refused(request, submitted, persona, action, data):
    response = as_(request.getfixturevalue(persona)).post(
        f"/research/requests/{submitted.pk}/{action}", data)
    assert response.status_code == 403
    assert messages_of(response)
    assert not Vote.objects.exists() and not Decision.objects.exists()
    submitted.refresh_from_db()
    assert (submitted.status, submitted.revision) == (DataRequest.Status.SUBMITTED, 1)


def test_a_site_pi_answers_for_their_own_site_only(approved, priya, sam):
    at_a = approved.participations.get(site__code="SITE-A")
    response = as_(sam).post(f"/research/requests/{approved.pk}/sites/{at_a.pk}/answer/",
                             {f"p{at_a.pk}-answer": "opted_in"})
    assert response.status_code == 403
    assert any("SITE-A" in m for m in messages_of(response))
    at_a.refresh_from_db()
    assert at_a.answer == SiteParticipation.Answer.PENDING
    page = as_(priya).get(f"/research/requests/{approved.pk}/")
    assert 'id="answer-SITE-A"' in page.text and 'id="answer-SITE-B"' not in page.text


def test_an_empty_cohort_is_not_submitted(ivan, cohort):
    data_request = draft(ivan, criteria={"cancer": ["C50"]})
    response = as_(ivan).post(f"/research/requests/{data_request.pk}/submit/")
    assert response.status_code == 400
    assert any("cohort is empty" in m for m in messages_of(response))
    data_request.refresh_from_db()
    assert (data_request.status, data_request.revision) == (DataRequest.Status.DRAFT, 0)


def test_a_request_under_review_is_not_edited(submitted, ivan):
    response = as_(ivan).post(f"/research/requests/{submitted.pk}/edit/",
                              form_data(title="Changed"))
    assert response.status_code == 302
    submitted.refresh_from_db()
    assert submitted.title == "Neutropenia under platinum doublets"


# The form: what it offers, and the count.

def test_the_form_offers_no_direct_identifier_and_marks_quasi_identifiers(ivan, site_a):
    page = as_(ivan).get("/research/requests/new/")
    assert 'value="patient.sex"' in page.text and 'value="diagnosis.cancer"' in page.text
    assert 'value="patient.registry_id"' not in page.text
    assert 'value="patient.hospital_number_hash"' not in page.text
    assert "needs explicit approval" in page.text
    assert 'value="SITE-A"' in page.text
    assert 'src="/static/research/request_form.js"' in page.text


def test_the_feasibility_count_is_disclosed_not_exact(ivan, site_a, alice):
    for _ in range(13):
        submitted_patient(site_a, alice)
    submitted_patient(site_a, alice, cancer="C50")
    client = as_(ivan)
    many = client.get(FEASIBILITY, {"purpose": "academic", "sites": "SITE-A", "cancer": "C34"})
    assert (many.status_code, many.json()) == (200, {"count": "15"})
    few = client.get(FEASIBILITY, {"purpose": "academic", "sites": "SITE-A", "cancer": "C50"})
    assert few.json() == {"count": "< 11"}
    as_json = client.get(FEASIBILITY, {"sites": "SITE-A", "criteria": '{"cancer": "C34"}'})
    assert as_json.json() == {"count": "15"}
    commercial = client.get(FEASIBILITY, {"purpose": "commercial", "sites": "SITE-A"})
    assert commercial.json() == {"count": "< 11"}  # their consent is academic only
    data_request = draft(ivan, site_codes=["SITE-A"])
    assert '<strong id="feasibility">15</strong>' in client.get(
        f"/research/requests/{data_request.pk}/").text
    assert "15" in client.get(f"/research/requests/{data_request.pk}/edit/").text


# Hostile input.

HUGE = "x" * 1_000_000


@pytest.mark.parametrize("overrides, field", [
    ({"title": HUGE}, "title"),
    ({"title": ""}, "title"),
    ({"question": HUGE}, "question"),
    ({"access_days": "-1"}, "access_days"),
    ({"access_days": "NaN"}, "access_days"),
    ({"access_days": "1e308"}, "access_days"),
    ({"access_days": "9" * 40}, "access_days"),
    ({"access_days": "Infinity"}, "access_days"),
    ({"diagnosis_year_from": "2999"}, "diagnosis_year_from"),
    ({"diagnosis_year_from": "-5"}, "diagnosis_year_from"),
    ({"diagnosis_year_to": "NaN"}, "diagnosis_year_to"),
    ({"diagnosis_year_from": "2020", "diagnosis_year_to": "2010"}, "diagnosis_year_to"),
    ({"cancer": HUGE}, "cancer"),
    ({"cancer": "DROP TABLE"}, "cancer"),
    ({"stage_groups": "<script>"}, "stage_groups"),
    ({"purpose": "marketing"}, "purpose"),
    ({"sites": ["NOPE"]}, "sites"),
    ({"sites": [HUGE]}, "sites"),
    ({"variables": ["patient.registry_id"]}, "variables"),
    ({"variables": ['{"a": 1}']}, "variables"),
    ({"team": "nobody"}, "team"),
    ({"team": HUGE}, "team"),
])
def test_hostile_input_on_the_request_form_is_shown_at_its_field(ivan, site_a, site_b,
                                                                 overrides, field):
    response = as_(ivan).post("/research/requests/new/", form_data(**overrides))
    assert response.status_code == 200
    assert field in response.context["form"].errors
    assert not DataRequest.objects.exists()


def test_a_nul_byte_anywhere_is_a_400(ivan, drafted):
    client = as_(ivan)
    assert client.post("/research/requests/new/", form_data(title="a\x00b")).status_code == 400
    assert client.get(FEASIBILITY, {"cancer": "C3\x004"}).status_code == 400
    assert client.post(f"/research/requests/{drafted.pk}/edit/",
                       form_data(question="\x00")).status_code == 400
    assert DataRequest.objects.get().question == "How often?"


@pytest.mark.parametrize("params, field", [
    ({"cancer": HUGE}, "cancer"),
    ({"cancer": "DROP TABLE"}, "cancer"),
    ({"diagnosis_year_from": "-1"}, "diagnosis_year_from"),
    ({"diagnosis_year_from": "NaN"}, "diagnosis_year_from"),
    ({"diagnosis_year_to": "9" * 40}, "diagnosis_year_to"),
    ({"diagnosis_year_to": "2999"}, "diagnosis_year_to"),
    ({"purpose": "marketing"}, "purpose"),
    ({"sites": "NOPE"}, "sites"),
    ({"chemotherapy": "maybe"}, "chemotherapy"),
    ({"criteria": "[1, 2]"}, "criteria"),
    ({"criteria": '"C34"'}, "criteria"),
    ({"criteria": "NaN"}, "criteria"),
    ({"criteria": '{"cancer": 5}'}, "cancer"),
    ({"criteria": '{"cancer": [NaN]}'}, "cancer"),
    ({"criteria": '{"diagnosis_year_from": 1e308}'}, "diagnosis_year_from"),
    ({"criteria": '{"cancr": ["C34"]}'}, "criteria"),
    ({"criteria": "{" * 1000}, "criteria"),
    ({"criteria": "[" * 900 + "]" * 900}, "criteria"),
    ({"criteria": HUGE}, "criteria"),
])
def test_hostile_input_on_the_feasibility_endpoint_is_a_400_naming_the_field(ivan, site_a,
                                                                             params, field):
    response = as_(ivan).get(FEASIBILITY, {"sites": "SITE-A", **params})
    assert response.status_code == 400
    body = response.json()
    assert field in body["errors"] and body["error"]


@pytest.mark.parametrize("data, field", [
    ({"k_anonymity": "NaN"}, "k_anonymity"),
    ({"k_anonymity": "-1"}, "k_anonymity"),
    ({"k_anonymity": "1"}, "k_anonymity"),
    ({"k_anonymity": "9" * 40}, "k_anonymity"),
    ({"k_anonymity": "5", "conditions": HUGE}, "conditions"),
    ({"k_anonymity": "5", "approved_quasi_identifiers": ["patient.region"]},
     "approved_quasi_identifiers"),
])
def test_hostile_input_on_the_decision_form(submitted, carol, cleo, chad, data, field):
    vote_cast(request=submitted, acting_user=carol, choice="approve")
    vote_cast(request=submitted, acting_user=cleo, choice="approve")
    response = as_(chad).post(f"/research/requests/{submitted.pk}/decision/", data)
    assert response.status_code == 400
    assert field in response.context["decision_form"].errors
    assert not Decision.objects.exists()


@pytest.mark.parametrize("data", [{"choice": "yes"}, {"choice": HUGE},
                                  {"choice": "reject", "comment": HUGE}, {}])
def test_hostile_input_on_the_vote_form(submitted, carol, data):
    response = as_(carol).post(f"/research/requests/{submitted.pk}/vote/", data)
    assert response.status_code == 400
    assert response.context["vote_form"].errors
    assert not Vote.objects.exists()


def test_hostile_input_on_the_answer_and_conflict_forms(approved, priya, carol):
    at_a = approved.participations.get(site__code="SITE-A")
    url = f"/research/requests/{approved.pk}/sites/{at_a.pk}/answer/"
    for data in ({f"p{at_a.pk}-answer": "pending"}, {f"p{at_a.pk}-answer": HUGE},
                 {f"p{at_a.pk}-answer": "declined", f"p{at_a.pk}-comment": HUGE}):
        assert as_(priya).post(url, data).status_code == 400
    at_a.refresh_from_db()
    assert at_a.answer == SiteParticipation.Answer.PENDING
    other = as_(priya).post(f"/research/requests/{approved.pk}/sites/{10**12}/answer/",
                            {"p1-answer": "opted_in"})
    assert other.status_code == 404
    assert as_(carol).post(f"/research/requests/{approved.pk}/conflict/",
                           {"statement": HUGE}).status_code == 400
    assert not Recusal.objects.exists()


def test_catalog_filters_that_are_not_valid_are_ignored_with_a_warning(ivan):
    client = as_(ivan)
    page = client.get("/research/catalog/", {"q": HUGE, "table": "nope", "klass": "x"})
    assert page.status_code == 200
    assert any("not valid" in m for m in messages_of(page))
    assert "patient.sex" in page.text
    found = client.get("/research/catalog/", {"q": "stage"})
    assert "diagnosis.stage_group" in found.text and "patient.sex" not in found.text
    direct = client.get("/research/catalog/", {"klass": "direct"})
    assert "patient.registry_id" in direct.text and "never released" in direct.text
    assert "diagnosis.cancer" not in direct.text
    labs = client.get("/research/catalog/", {"table": "labs"})
    assert "labresult.value_canonical" in labs.text and "patient.sex" not in labs.text


# Releases.

@pytest.fixture
def opted_in(approved, priya):
    participation_answer(participation=approved.participations.get(site__code="SITE-A"),
                         acting_user=priya, answer="opted_in")
    return approved


@pytest.fixture
def built(opted_in, ivan, pat):
    opted_in.team.add(pat)
    release = release_request(request=opted_in, acting_user=ivan)
    return release_build(release_id=release.pk)


def test_release_pages_for_every_persona(people, built):
    base = f"/research/releases/{built.pk}/"
    urls = {"page": base, "status": base + "status", "file": base + "files/codebook.csv"}
    # The team downloads; the committee and the admin see what was released; others nothing.
    expected = {"team": {"page": 200, "status": 200, "file": 200},
                "sees": {"page": 200, "status": 200, "file": 404},
                "none": {"page": 404, "status": 404, "file": 404}}
    # pat is in the team, but a partner has only his organisation's commercial releases.
    who = {"ivan": "team", "pat": "none", "carol": "sees", "cleo": "sees", "chad": "sees",
           "ada": "sees", "priya": "none", "sam": "none", "alice": "none", "mona": "none"}
    problems = []
    for persona, user in people.items():
        client = as_(user)
        for step, url in urls.items():
            status = client.get(url).status_code
            if status != expected[who[persona]][step]:
                problems.append(f"{persona} {step}: {status}")
    assert not problems, "\n".join(problems)
    assert sorted(Download.objects.values_list("user__username", flat=True)) == ["ivan"]
    assert as_(people["ivan"]).get(urls["status"]).json() == {
        "status": "ready", "label": "Ready", "progress": 100, "note": ""}
    team_page = as_(people["ivan"]).get(base)
    assert 'id="downloads"' in team_page.text and 'id="k-report"' in team_page.text
    committee_page = as_(people["carol"]).get(base)
    assert 'id="downloads"' not in committee_page.text
    assert f'href="{base}files/' not in committee_page.text


@pytest.mark.parametrize("name", ["nope.csv", "../manifest.json", "x" * 10_000, "-1", "NaN",
                                  "🧪", "codebook.csv.", "CODEBOOK.CSV"])
def test_a_file_the_release_does_not_hold_is_not_found(built, ivan, name):
    response = as_(ivan).get(f"/research/releases/{built.pk}/files/{name}")
    assert response.status_code == 404
    assert not Download.objects.exists()


def test_a_download_after_the_access_period_is_refused(built, ivan):
    Release.objects.filter(pk=built.pk).update(expires_at=timezone.now() - dt.timedelta(days=1))
    response = as_(ivan).get(f"/research/releases/{built.pk}/files/codebook.csv")
    assert response.status_code == 400
    assert any("access period" in m for m in messages_of(response))
    assert f'href="/research/releases/{built.pk}/files/' not in response.text
    assert not Download.objects.exists()


def test_a_release_not_built_yet_is_not_downloaded_and_its_page_polls(opted_in, ivan):
    client = as_(ivan)
    response = client.post(f"/research/requests/{opted_in.pk}/releases/")
    release = Release.objects.get()
    assert response.status_code == 302 and release.status == Release.Status.QUEUED
    page = client.get(f"/research/releases/{release.pk}/")
    assert 'id="release-poll"' in page.text
    assert 'src="/static/research/release_detail.js"' in page.text
    # A second one while the first is being built is refused.
    again = client.post(f"/research/requests/{opted_in.pk}/releases/")
    assert again.status_code == 400
    assert any("already being built" in m for m in messages_of(again))
    assert Release.objects.count() == 1


def test_a_release_is_asked_only_by_the_team_once_a_site_opted_in(approved, ivan, carol,
                                                                  priya):
    refused = as_(ivan).post(f"/research/requests/{approved.pk}/releases/")
    assert refused.status_code == 400
    assert any("No site has opted in" in m for m in messages_of(refused))
    assert 'id="request-release"' not in refused.text
    participation_answer(participation=approved.participations.get(site__code="SITE-A"),
                         acting_user=priya, answer="opted_in")
    assert 'id="request-release"' in as_(ivan).get(f"/research/requests/{approved.pk}/").text
    member = as_(carol).post(f"/research/requests/{approved.pk}/releases/")
    assert member.status_code == 403
    assert as_(priya).post(f"/research/requests/{approved.pk}/releases/").status_code == 403
    assert not Release.objects.exists()


# Chinese.

def test_the_pages_render_in_chinese(built, drafted, ivan, carol, chad, priya):
    approved = built.request
    shared = ["/research/", "/research/catalog/", f"/research/requests/{approved.pk}/"]
    pages = {ivan: [*shared, "/research/requests/new/",
                    f"/research/requests/{drafted.pk}/edit/", f"/research/requests/{drafted.pk}/",
                    f"{FEASIBILITY}?sites=SITE-A", f"/research/releases/{built.pk}/"],
             carol: [*shared, f"/research/releases/{built.pk}/"], chad: shared, priya: shared}
    for user, urls in pages.items():
        client = as_(user)
        for url in urls:
            response = client.get(url, HTTP_ACCEPT_LANGUAGE="zh-hans")
            assert response.status_code == 200, (user, url)
            if url.startswith(FEASIBILITY):
                assert response.json() == {"count": "< 11"}
            else:
                assert '<html lang="zh-hans">' in response.text, (user, url)
    cookie = as_(ivan)
    cookie.cookies["django_language"] = "zh-hans"
    catalog_page = cookie.get("/research/catalog/")
    assert '<html lang="zh-hans">' in catalog_page.text
    assert "首次诊断年龄" in catalog_page.text  # the catalog's labels in the user's language
    detail = cookie.get(f"/research/requests/{approved.pk}/")
    assert detail.status_code == 200 and "性别" in detail.text


# The admin: organisations and affiliations kept through the services; the rest read-only.

def test_the_registry_admin_keeps_organisations_and_affiliations(ada, ivan):
    client = as_(ada)
    response = client.post("/admin/research/organisation/add/",
                           {"name": "Westlake University", "kind": "academic", "site": ""})
    assert response.status_code == 302
    organisation = Organisation.objects.get(name="Westlake University")
    assert organisation.history.latest().history_user == ada
    response = client.post(f"/admin/research/organisation/{organisation.pk}/change/",
                           {"kind": "hospital", "site": ""})
    assert response.status_code == 302
    organisation.refresh_from_db()
    assert organisation.kind == "hospital" and organisation.name == "Westlake University"
    response = client.post("/admin/research/affiliation/add/",
                           {"user": str(ivan.pk), "organisation": str(organisation.pk)})
    assert response.status_code == 302
    affiliation = Affiliation.objects.get(user=ivan)
    assert affiliation.organisation == organisation
    assert affiliation.history.latest().history_user == ada
    again = client.post("/admin/research/affiliation/add/",
                        {"user": str(ivan.pk), "organisation": str(organisation.pk)})
    assert again.status_code == 200 and Affiliation.objects.count() == 1
    assert client.post(f"/admin/research/organisation/{organisation.pk}/delete/",
                       {"post": "yes"}).status_code == 403
    assert Organisation.objects.filter(pk=organisation.pk).exists()


def test_committee_records_are_read_only_in_the_admin(ada, approved):
    client = as_(ada)
    decision = approved.decisions.get()
    vote = approved.votes.first()
    for url in (f"/admin/research/datarequest/{approved.pk}/change/",
                f"/admin/research/decision/{decision.pk}/change/",
                f"/admin/research/vote/{vote.pk}/change/",
                "/admin/research/datarequest/", "/admin/research/siteparticipation/",
                f"/admin/research/datarequest/{approved.pk}/history/"):
        assert client.get(url).status_code == 200, url
    before = list(DataRequest.objects.values())
    assert client.post(f"/admin/research/datarequest/{approved.pk}/change/",
                       {"title": "Changed", "status": "draft"}).status_code == 403
    assert client.get("/admin/research/datarequest/add/").status_code == 403
    assert client.post(f"/admin/research/vote/{vote.pk}/delete/",
                       {"post": "yes"}).status_code == 403
    assert list(DataRequest.objects.values()) == before
    assert Vote.objects.filter(pk=vote.pk).exists()
    assert client.get("/admin/research/vote/999999999/change/").status_code == 404


def test_staff_without_the_admin_role_see_nothing_of_research_in_the_admin(mona, approved):
    mona.is_staff = True
    mona.save(update_fields=["is_staff"])
    mona.user_permissions.add(*Permission.objects.filter(content_type__app_label="research"))
    client = as_(mona)
    for url in ("/admin/research/organisation/", "/admin/research/datarequest/",
                f"/admin/research/datarequest/{approved.pk}/change/",
                "/admin/research/organisation/add/"):
        assert client.get(url).status_code == 403, url
    assert client.post("/admin/research/organisation/add/",
                       {"name": "Sneaky Ltd", "kind": "company"}).status_code == 403
    assert not Organisation.objects.filter(name="Sneaky Ltd").exists()
    assert "/admin/research/" not in client.get("/admin/").text
