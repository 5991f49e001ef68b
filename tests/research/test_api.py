"""The data-use committee over the REST API: the whole flow by token (draft, edit, submit, vote,
decide, opt in, release, download), one step by session, each persona on each endpoint, bad
input, the committee's refusals, tokens without their scope or no longer valid, and the
schema.

Personas (tests/conftest.py, tests/research/conftest.py): ivan requests, olga is another
investigator, carol and cleo sit on the committee, chad chairs, priya is site PI of SITE-A, sam
of SITE-B, pat is a partner, ada the registry admin, alice a clerk (no API scope).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml
from django.test import Client
from django.utils import timezone
from drf_spectacular.validation import validate_schema

from registry.models import ApiToken, Role
from registry.services.api_tokens import api_token_create, api_token_revoke
from research.api.serializers import RequestInput
from research.models import (
    DataRequest,
    Decision,
    Download,
    Recusal,
    Release,
    SiteParticipation,
    Vote,
)
from research.services.committee import decision_record, participation_answer, vote_cast
from research.services.releases import release_build, release_request
from research.services.requests import REQUEST_FIELDS, request_create, request_submit
from tests.conftest import _person
from tests.research.conftest import submitted_patient

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

V1 = "/api/v1"
VARIABLES = ["patient.sex", "diagnosis.cancer", "diagnosis.stage_group", "cycle.start_date"]
# The scopes each persona's token holds: all its roles allow.
SCOPES = {"ivan": ["requests", "releases"], "olga": ["requests", "releases"],
          "carol": ["requests"], "cleo": ["requests"], "chad": ["requests"],
          "priya": ["requests"], "sam": ["requests"], "pat": ["releases"],
          "ada": ["requests", "releases"]}


def fields(**overrides) -> dict:
    body = {"title": "Neutropenia under platinum doublets", "question": "How often?",
            "protocol_summary": "Retrospective cohort.", "purpose": "academic",
            "access_days": 365, "criteria": {"cancer": ["C34"]}, "variables": VARIABLES,
            "site_codes": ["SITE-A", "SITE-B"], "team": []}
    body.update(overrides)
    return body


class Api:
    """A client calling the API with one bearer token."""

    def __init__(self, text: str) -> None:
        self.client = Client()
        self.headers = {"HTTP_AUTHORIZATION": f"Bearer {text}"}

    def get(self, url: str, params: dict | None = None, **extra):
        return self.client.get(url, params or {}, **self.headers, **extra)

    def post(self, url: str, body=None, **extra):
        return self.client.post(url, {} if body is None else body,
                                content_type="application/json", **self.headers, **extra)

    def patch(self, url: str, body, **extra):
        return self.client.patch(url, body, content_type="application/json", **self.headers,
                                 **extra)

    def send(self, method: str, url: str, body=None):
        if method == "GET":
            return self.get(url)
        return getattr(self.client, method.lower())(
            url, {} if body is None else body, content_type="application/json",
            **self.headers)


def token_text(user, scopes) -> str:
    return api_token_create(user=user, name="tests", scopes=scopes, expires_days=30,
                            acting_user=None)[1]


def error(response) -> dict:
    return response.json()["error"]


@pytest.fixture
def olga(db):
    return _person("olga", Role.INVESTIGATOR)


@pytest.fixture
def people(ivan, olga, carol, cleo, chad, priya, sam, pat, ada, committee_rules):
    return {"ivan": ivan, "olga": olga, "carol": carol, "cleo": cleo, "chad": chad,
            "priya": priya, "sam": sam, "pat": pat, "ada": ada}


@pytest.fixture
def api(people) -> dict[str, Api]:
    """One client per persona, each with a token of every scope its roles allow."""
    return {name: Api(token_text(user, SCOPES[name])) for name, user in people.items()}


@pytest.fixture
def cohort(site_a, site_b, alice, bob):
    return [submitted_patient(site_a, alice, sex="F"), submitted_patient(site_a, alice, sex="M"),
            submitted_patient(site_a, alice, sex="F", birth_year=1955),
            submitted_patient(site_b, bob, sex="M"), submitted_patient(site_b, bob, sex="F")]


# -- the whole flow ---------------------------------------------------------------------------


def test_the_whole_flow_by_token(api, people, cohort, release_dir,
                                 django_capture_on_commit_callbacks):
    ivan, carol, chad, priya, sam = (api[n] for n in ("ivan", "carol", "chad", "priya", "sam"))

    # The catalog: what a request may name.
    response = ivan.get(f"{V1}/catalog/variables/")
    assert response.status_code == 200
    catalog = {v["name"]: v for v in response.json()}
    assert catalog["patient.registry_id"]["class"] == "direct"
    assert catalog["patient.registry_id"]["requestable"] is False
    assert catalog["patient.sex"]["class"] == "quasi"
    sex = {v["code"]: v for v in catalog["patient.sex"]["values"]}
    assert sex["F"]["label_en"] and sex["F"]["label_zh"]
    assert catalog["diagnosis.cancer"]["label_zh"] == "肿瘤部位(ICD-10)"

    # Draft, edit, count, submit.
    response = ivan.post(f"{V1}/requests/", fields(title="First title"))
    assert response.status_code == 201, response.content
    body = response.json()
    request = DataRequest.objects.get(pk=body["id"])
    assert response["Location"] == f"{V1}/requests/{request.pk}/"
    assert (request.status, request.requester, request.title) == ("draft", people["ivan"],
                                                                  "First title")
    assert request.variables == VARIABLES and body["variables"] == VARIABLES
    assert body["site_codes"] == ["SITE-A", "SITE-B"] and body["criteria"] == {
        "cancer": ["C34"]}

    response = ivan.patch(f"{V1}/requests/{request.pk}/", {"title": "Neutropenia by regimen"})
    assert response.status_code == 200
    request.refresh_from_db()
    assert request.title == response.json()["title"] == "Neutropenia by regimen"
    assert request.question == "How often?"  # not given: kept
    assert request.history.latest().history_change_reason == "request edited"

    response = ivan.post(f"{V1}/requests/{request.pk}/feasibility/")
    assert response.status_code == 200
    assert response.json() == {"count": None, "text": "< 11"}

    response = ivan.post(f"{V1}/requests/{request.pk}/submit/")
    assert response.status_code == 200
    request.refresh_from_db()
    assert (request.status, request.revision) == ("submitted", 1)
    assert response.json()["status"] == "submitted" and response.json()["revision"] == 1

    # The committee votes; the votes are theirs to read.
    response = carol.post(f"{V1}/requests/{request.pk}/votes/", {"choice": "approve"})
    assert response.status_code == 201
    assert response.json()["member"] == "carol" and response.json()["revision"] == 1
    response = api["cleo"].post(f"{V1}/requests/{request.pk}/votes/",
                                {"choice": "approve_conditions", "comment": "Sex only."})
    assert response.status_code == 201
    assert sorted(Vote.objects.filter(request=request).values_list("member__username",
                                                                   "choice")) == [
        ("carol", "approve"), ("cleo", "approve_conditions")]
    votes = carol.get(f"{V1}/requests/{request.pk}/votes/")
    assert votes.status_code == 200 and votes.json()["count"] == 2
    assert ivan.get(f"{V1}/requests/{request.pk}/votes/").status_code == 403
    assert ivan.get(f"{V1}/requests/{request.pk}/").json()["votes"] is None
    assert len(carol.get(f"{V1}/requests/{request.pk}/").json()["votes"]) == 2

    # The chair decides.
    response = chad.post(f"{V1}/requests/{request.pk}/decision/", {
        "conditions": "Sex only.", "approved_quasi_identifiers": ["patient.sex"],
        "k_anonymity": 2})
    assert response.status_code == 201, response.content
    decision = Decision.objects.get(request=request)
    assert (decision.outcome, decision.chair, decision.approved_quasi_identifiers,
            decision.k_anonymity) == ("approve_conditions", people["chad"], ["patient.sex"], 2)
    assert response.json()["tally"]["cast"] == 2 and response.json()["tally"]["quorate"]
    request.refresh_from_db()
    assert request.status == "approved_conditions"

    # The sites answer.
    questions = priya.get(f"{V1}/participations/").json()
    assert questions["count"] == 1 and questions["results"][0]["site"] == "SITE-A"
    at_a = questions["results"][0]["id"]
    response = priya.post(f"{V1}/participations/{at_a}/answer/", {"answer": "opted_in"})
    assert response.status_code == 200
    assert SiteParticipation.objects.get(pk=at_a).answer == "opted_in"
    at_b = sam.get(f"{V1}/participations/").json()["results"][0]["id"]
    response = sam.post(f"{V1}/participations/{at_b}/answer/",
                        {"answer": "declined", "comment": "Not this year."})
    assert response.status_code == 200
    declined = SiteParticipation.objects.get(pk=at_b)
    assert (declined.answer, declined.answered_by) == ("declined", people["sam"])
    shown = {p["site"]: p for p in ivan.get(f"{V1}/requests/{request.pk}/").json()[
        "participations"]}
    assert shown["SITE-B"]["answer"] == "declined" and shown["SITE-B"]["answered_by"] == "sam"
    assert shown["SITE-A"]["answered_by"] == "priya"

    # A release: queued (202), built by the task once the request commits, polled, downloaded.
    with django_capture_on_commit_callbacks(execute=True):
        response = ivan.post(f"{V1}/requests/{request.pk}/releases/")
    assert response.status_code == 202, response.content
    release = Release.objects.get(request=request)
    assert response.json()["id"] == release.pk and response.json()["status"] == "queued"
    assert response["Location"] == f"{V1}/releases/{release.pk}/"
    polled = ivan.get(f"{V1}/releases/{release.pk}/").json()
    assert polled["status"] == "ready" and polled["progress"] == 100
    assert polled["patients"] == 3  # SITE-A's three; SITE-B declined
    assert polled["k_report"]["k"] == 2
    files = {f["name"]: f for f in polled["files"]}
    assert set(files) == {e["name"] for e in polled["manifest"]["files"]}
    listed = ivan.get(f"{V1}/releases/").json()
    assert [r["id"] for r in listed["results"]] == [release.pk]
    assert [r["id"] for r in ivan.get(f"{V1}/requests/{request.pk}/releases/").json()[
        "results"]] == [release.pk]

    zipped = files["data-csv.zip"]
    assert zipped["url"] == f"http://testserver{V1}/releases/{release.pk}/files/data-csv.zip"
    response = ivan.get(zipped["url"])
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="data-csv.zip"'
    content = b"".join(response.streaming_content)
    on_disk = (Path(release_dir) / str(release.pk) / "data-csv.zip").read_bytes()
    assert content == on_disk
    assert hashlib.sha256(content).hexdigest() == zipped["sha256"]
    assert len(content) == zipped["bytes"]
    download = Download.objects.get(release=release)
    assert (download.user, download.channel, download.file.name) == (
        people["ivan"], "api", "data-csv.zip")


def test_a_step_by_session_needs_its_csrf_token(ivan, site_a):
    client = Client(enforce_csrf_checks=True)
    client.force_login(ivan)
    response = client.post(f"{V1}/requests/", fields(site_codes=["SITE-A"]),
                           content_type="application/json")
    assert response.status_code == 403
    assert "CSRF" in error(response)["message"]
    assert not DataRequest.objects.exists()

    client.get("/accounts/login/")  # sets the CSRF cookie, as any page of the registry does
    csrf = client.cookies["csrftoken"].value
    response = client.post(f"{V1}/requests/", fields(site_codes=["SITE-A"]),
                           content_type="application/json", HTTP_X_CSRFTOKEN=csrf)
    assert response.status_code == 201, response.content
    request = DataRequest.objects.get()
    assert request.requester == ivan and response.json()["id"] == request.pk
    assert client.get(f"{V1}/requests/{request.pk}/").json()["title"] == request.title


# -- who may do what ---------------------------------------------------------------------------


@pytest.fixture
def world(people, cohort, release_dir):
    """ivan's draft, and ivan's approved request with a ready release (SITE-A opted in,
    SITE-B pending)."""
    ivan, carol, cleo, chad = (people[n] for n in ("ivan", "carol", "cleo", "chad"))
    draft = request_create(acting_user=ivan, **fields(title="A draft"))
    approved = request_create(acting_user=ivan, **fields(title="Approved"))
    request_submit(request=approved, acting_user=ivan)
    vote_cast(request=approved, acting_user=carol, choice="approve")
    vote_cast(request=approved, acting_user=cleo, choice="approve")
    decision_record(request=approved, acting_user=chad, k_anonymity=2)
    at_a = approved.participations.get(site__code="SITE-A")
    at_b = approved.participations.get(site__code="SITE-B")
    participation_answer(participation=at_a, acting_user=people["priya"], answer="opted_in")
    release = release_build(
        release_id=release_request(request=approved, acting_user=ivan).pk)
    assert release.status == "ready"
    return {"D": draft.pk, "A": approved.pk, "R": release.pk, "PA": at_a.pk, "PB": at_b.pk}


PERSONAS = ["ivan", "olga", "carol", "chad", "priya", "sam", "pat", "ada"]
# (method, URL, {persona: status, or None when not tried}) for every endpoint. D: ivan's
# draft; A: ivan's approved request; R: its ready release; PA/PB: A's questions to SITE-A
# (answered) and SITE-B.
MATRIX = [
    ("GET", "/catalog/variables/", dict.fromkeys(PERSONAS, 200)),
    ("GET", "/requests/", {**dict.fromkeys(PERSONAS, 200), "pat": 403}),
    ("GET", "/requests/{D}/", {**dict.fromkeys(PERSONAS, 404), "ivan": 200, "ada": 200,
                               "pat": 403}),
    ("GET", "/requests/{A}/", {**dict.fromkeys(PERSONAS, 200), "olga": 404, "pat": 403}),
    ("GET", "/requests/{A}/votes/", {**dict.fromkeys(PERSONAS, 403), "olga": 404,
                                     "carol": 200, "chad": 200, "ada": 200}),
    ("GET", "/participations/", {**dict.fromkeys(PERSONAS, 200), "pat": 403}),
    ("GET", "/requests/{A}/releases/", {**dict.fromkeys(PERSONAS, 403), "ivan": 200,
                                        "olga": 404, "pat": 404, "ada": 200}),
    ("GET", "/releases/", {**dict.fromkeys(PERSONAS, 403), "ivan": 200, "olga": 200,
                           "pat": 200, "ada": 200}),
    ("GET", "/releases/{R}/", {**dict.fromkeys(PERSONAS, 403), "ivan": 200, "olga": 404,
                               "pat": 404, "ada": 200}),
    # The admin sees the release but is not on its team: its files are the team's.
    ("GET", "/releases/{R}/files/README.md", {**dict.fromkeys(PERSONAS, 403), "ivan": 200,
                                              "olga": 404, "pat": 404, "ada": 404}),
    ("POST", "/requests/{D}/feasibility/", {**dict.fromkeys(PERSONAS, 404), "ivan": 200,
                                            "ada": 200, "pat": 403}),
    # Writes refused: nothing changes (checked after the matrix). A persona for whom the write
    # would succeed is left out (the flow tests do those writes).
    ("PATCH", "/requests/{D}/", {**dict.fromkeys(PERSONAS, 404), "ada": 403, "pat": 403,
                                 "ivan": None}),
    ("PATCH", "/requests/{A}/", {**dict.fromkeys(PERSONAS, 403), "ivan": 400, "olga": 404}),
    ("POST", "/requests/{D}/submit/", {**dict.fromkeys(PERSONAS, 404), "ada": 403,
                                       "pat": 403, "ivan": None}),
    ("POST", "/requests/{A}/submit/", {**dict.fromkeys(PERSONAS, 403), "ivan": 400,
                                       "olga": 404}),
    ("POST", "/requests/{A}/votes/", {**dict.fromkeys(PERSONAS, 403), "olga": 404,
                                      "carol": 400, "chad": 400}),
    ("POST", "/requests/{D}/votes/", {**dict.fromkeys(PERSONAS, 404), "ivan": 403,
                                      "ada": 403, "pat": 403}),
    ("POST", "/requests/{A}/decision/", {**dict.fromkeys(PERSONAS, 403), "olga": 404,
                                         "chad": 400}),
    ("POST", "/requests/{D}/recusal/", {**dict.fromkeys(PERSONAS, 404), "ivan": 403,
                                        "ada": 403, "pat": 403}),
    ("POST", "/participations/{PB}/answer/", {**dict.fromkeys(PERSONAS, 403), "olga": 404,
                                              "sam": None}),
    ("POST", "/requests/{A}/releases/", {**dict.fromkeys(PERSONAS, 403), "olga": 404,
                                         "pat": 404, "ivan": None}),
    ("POST", "/requests/{D}/releases/", {**dict.fromkeys(PERSONAS, 403), "ivan": 400,
                                         "olga": 404, "pat": 404}),
    ("DELETE", "/requests/{A}/", {**dict.fromkeys(PERSONAS, 405), "pat": 403}),
    ("PUT", "/releases/{R}/", {**dict.fromkeys(PERSONAS, 403), "ivan": 405, "olga": 405,
                               "pat": 405, "ada": 405}),
]
BODIES = {
    "/requests/{A}/": {"title": "Changed"},
    "/requests/{D}/": {"title": "Changed"},
    "/requests/{A}/votes/": {"choice": "approve"},
    "/requests/{D}/votes/": {"choice": "approve"},
    "/requests/{A}/decision/": {},
    "/requests/{D}/recusal/": {"statement": "A conflict."},
    "/participations/{PB}/answer/": {"answer": "opted_in"},
}


def _state(world) -> dict:
    return {
        "titles": sorted(DataRequest.objects.values_list("title", "status", "revision")),
        "votes": Vote.objects.count(), "decisions": Decision.objects.count(),
        "recusals": Recusal.objects.count(),
        "answers": sorted(SiteParticipation.objects.values_list("pk", "answer")),
        "releases": Release.objects.count(),
    }


def test_each_persona_on_each_endpoint(api, world):
    before = _state(world)
    before_downloads = Download.objects.count()
    wrong = []
    for method, template, expected in MATRIX:
        url = V1 + template.format(**world)
        for persona in PERSONAS:
            if expected[persona] is None:
                continue
            response = api[persona].send(method, url, BODIES.get(template))
            if response.status_code != expected[persona]:
                wrong.append(f"{method} {template} as {persona}: {response.status_code}, "
                             f"expected {expected[persona]} ({response.content[:200]!r})")
            elif response.status_code >= 400:
                assert error(response)["status"] == response.status_code
    assert not wrong, "\n".join(wrong)
    assert _state(world) == before
    # ivan's one download of README.md is the only one recorded.
    assert Download.objects.count() == before_downloads + 1
    assert Download.objects.get().user.username == "ivan"


def test_lists_hold_only_what_each_persona_may_see(api, world):
    def ids(persona, url):
        response = api[persona].get(V1 + url)
        assert response.status_code == 200
        return sorted(r["id"] for r in response.json()["results"])

    assert ids("ivan", "/requests/") == sorted([world["D"], world["A"]])
    assert ids("olga", "/requests/") == []
    assert ids("carol", "/requests/") == [world["A"]]  # never another person's draft
    assert ids("priya", "/requests/") == [world["A"]]
    assert ids("ada", "/requests/") == sorted([world["D"], world["A"]])
    assert ids("priya", "/participations/") == [world["PA"]]
    assert ids("sam", "/participations/") == [world["PB"]]
    assert ids("carol", "/participations/") == []
    assert ids("olga", "/releases/") == [] and ids("pat", "/releases/") == []
    assert ids("ivan", "/releases/") == [world["R"]]
    page = api["ivan"].get(f"{V1}/requests/", {"page_size": 1}).json()
    assert page["count"] == 2 and len(page["results"]) == 1 and "page=2" in page["next"]
    assert api["ivan"].get(f"{V1}/requests/", {"page": 3}).status_code == 404
    # The recusals and votes are the committee's.
    assert api["priya"].get(f"{V1}/requests/{world['A']}/").json()["recusals"] is None
    assert api["chad"].get(f"{V1}/requests/{world['A']}/").json()["recusals"] == []


def test_a_clerk_has_no_scope_even_by_session(alice, ivan, site_a):
    request = request_create(acting_user=ivan, **fields(site_codes=["SITE-A"]))
    client = Client()
    client.force_login(alice)
    for url in ("/catalog/variables/", "/requests/", f"/requests/{request.pk}/",
                "/participations/", "/releases/"):
        response = client.get(V1 + url)
        assert response.status_code == 403, url
        assert error(response)["code"] == "permission_denied"


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("body, field", [
    (fields(title=123), "title"),
    (fields(title=["a"]), "title"),
    (fields(title=""), "title"),
    (fields(title="x" * 1_000_000), "title"),
    (fields(question="a\x00b"), "question"),
    (fields(access_days="many"), "access_days"),
    (fields(access_days=True), "access_days"),
    (fields(access_days=-1), "access_days"),
    (fields(access_days=10 ** 20), "access_days"),
    (fields(access_days=30.5), "access_days"),
    (fields(purpose="marketing"), "purpose"),
    (fields(variables="diagnosis.cancer"), "variables"),
    (fields(variables=[1, 2]), "variables.0"),
    (fields(variables=["patient.shoe_size"]), "variables"),
    (fields(site_codes="SITE-A"), "site_codes"),
    (fields(site_codes=["NOPE"]), "sites"),
    (fields(team=["nobody"]), "team"),
    (fields(team=["x" * 10_000]), "team.0"),
    (fields(criteria=["C34"]), "criteria.__all__"),
    (fields(criteria={"cancer": "C34"}), "criteria.cancer"),
    (fields(criteria={"cancer": ["DROP TABLE"]}), "cancer"),
    (fields(criteria={"cancr": ["C34"]}), "criteria.cancr"),
    (fields(criteria={"diagnosis_year_from": 99999}), "criteria.diagnosis_year_from"),
    (fields(criteria={"diagnosis_year_from": 2020, "diagnosis_year_to": 2010}),
     "diagnosis_year_to"),
    (fields(shoe_size=44), "shoe_size"),
    ({"title": "Only a title"}, "question"),
    ([fields()], "__all__"),
    ('"a string"', "__all__"),
])
def test_bad_input_is_refused_by_field_and_nothing_is_saved(api, body, field):
    response = api["ivan"].post(f"{V1}/requests/", body)
    assert response.status_code == 400, response.content
    refused = error(response)
    assert refused["code"] == "validation_failed"
    assert field in refused["fields"], refused["fields"]
    assert not DataRequest.objects.exists()


@pytest.mark.parametrize("raw", ['{"title": ', "NaN", '{"access_days": Infinity}', "\x00"])
def test_malformed_json_is_refused(api, raw):
    response = api["ivan"].post(f"{V1}/requests/", raw)
    assert response.status_code == 400
    assert error(response)["code"] == "malformed_request"
    assert not DataRequest.objects.exists()


def test_a_body_that_is_not_json_is_refused(api):
    response = api["ivan"].client.post(f"{V1}/requests/", "title=x", content_type="text/plain",
                                       **api["ivan"].headers)
    assert response.status_code == 415
    assert error(response)["code"] == "unsupported_media_type"
    assert not DataRequest.objects.exists()


def test_direct_identifiers_are_refused_by_name(api):
    response = api["ivan"].post(f"{V1}/requests/", fields(
        variables=["patient.registry_id", "patient.hospital_number_hash", "diagnosis.cancer"]))
    assert response.status_code == 400
    message = error(response)["fields"]["variables"][0]
    assert "patient.registry_id" in message and "patient.hospital_number_hash" in message
    assert not DataRequest.objects.exists()


def test_every_problem_is_named_at_once(api):
    response = api["ivan"].post(f"{V1}/requests/", fields(title="", shoe_size=1, hat=2,
                                                         access_days=0))
    assert response.status_code == 400
    assert {"title", "shoe_size", "hat", "access_days"} <= set(error(response)["fields"])


def test_the_request_input_holds_the_services_fields():
    assert list(RequestInput().fields) == list(REQUEST_FIELDS)


@pytest.mark.parametrize("path, body, field", [
    ("votes/", {"choice": "approve", "why": "x"}, "why"),
    ("votes/", {"choice": "maybe"}, "choice"),
    ("votes/", {"choice": ["approve"]}, "choice"),
    ("votes/", {"choice": "reject", "comment": "x" * 4001}, "comment"),
    ("votes/", {"choice": "reject", "comment": "a\x00b"}, "comment"),
    ("votes/", {"choice": "reject"}, "comment"),  # the service: say why
    ("votes/", {}, "choice"),
    ("recusal/", {"statement": 5}, "statement"),
    ("recusal/", {"statement": "x" * 4001}, "statement"),
])
def test_bad_committee_input_is_refused(api, people, cohort, path, body, field):
    request = request_submit(request=request_create(acting_user=people["ivan"], **fields()),
                             acting_user=people["ivan"])
    response = api["carol"].post(f"{V1}/requests/{request.pk}/{path}", body)
    assert response.status_code == 400, response.content
    assert field in error(response)["fields"]
    assert not Vote.objects.exists() and not Recusal.objects.exists()


# -- the committee's refusals ------------------------------------------------------------------


@pytest.fixture
def submitted(people, cohort):
    request = request_create(acting_user=people["ivan"], **fields())
    return request_submit(request=request, acting_user=people["ivan"])


def test_a_second_vote_is_refused(api, submitted):
    url = f"{V1}/requests/{submitted.pk}/votes/"
    assert api["carol"].post(url, {"choice": "approve"}).status_code == 201
    response = api["carol"].post(url, {"choice": "reject", "comment": "Changed my mind."})
    assert response.status_code == 400
    assert "already voted" in error(response)["message"]
    assert list(Vote.objects.values_list("member__username", "choice")) == [
        ("carol", "approve")]


def test_a_recused_member_cannot_vote(api, submitted):
    response = api["carol"].post(f"{V1}/requests/{submitted.pk}/recusal/",
                                 {"statement": "I consult for the sponsor."})
    assert response.status_code == 201
    assert response.json()["reason"] == "declared"
    assert Recusal.objects.get(request=submitted).member.username == "carol"
    response = api["carol"].post(f"{V1}/requests/{submitted.pk}/votes/", {"choice": "approve"})
    assert response.status_code == 403
    assert "recused" in error(response)["message"]
    assert not Vote.objects.exists()


def test_a_member_of_the_requesters_organisation_is_recused(api, people, cohort, affiliated):
    request = request_create(acting_user=people["ivan"], **fields())
    assert api["ivan"].post(f"{V1}/requests/{request.pk}/submit/").status_code == 200
    response = api["carol"].post(f"{V1}/requests/{request.pk}/votes/", {"choice": "approve"})
    assert response.status_code == 403
    assert not Vote.objects.exists()
    recusals = api["chad"].get(f"{V1}/requests/{request.pk}/").json()["recusals"]
    assert [(r["member"], r["reason"]) for r in recusals] == [("carol", "organisation")]


def test_no_decision_without_a_quorum(api, people, submitted):
    vote_cast(request=submitted, acting_user=people["carol"], choice="approve")
    response = api["chad"].post(f"{V1}/requests/{submitted.pk}/decision/", {})
    assert response.status_code == 400
    assert "quorum" in error(response)["message"]
    assert not Decision.objects.exists()
    submitted.refresh_from_db()
    assert submitted.status == "submitted"


def test_decision_input_is_checked(api, people, submitted):
    vote_cast(request=submitted, acting_user=people["carol"], choice="approve")
    vote_cast(request=submitted, acting_user=people["cleo"], choice="approve")
    url = f"{V1}/requests/{submitted.pk}/decision/"
    for body, field in [({"k_anonymity": "two"}, "k_anonymity"),
                        ({"k_anonymity": 10 ** 6}, "k_anonymity"),
                        ({"approved_quasi_identifiers": ["patient.region"]},
                         "approved_quasi_identifiers"),
                        ({"approved_quasi_identifiers": "patient.sex"},
                         "approved_quasi_identifiers"),
                        ({"conditions": "x" * 4001}, "conditions"),
                        ({"outcome": "approve"}, "outcome")]:
        response = api["chad"].post(url, body)
        assert response.status_code == 400, body
        assert field in error(response)["fields"], body
    assert not Decision.objects.exists()


def test_no_release_before_approval(api, submitted):
    response = api["ivan"].post(f"{V1}/requests/{submitted.pk}/releases/")
    assert response.status_code == 400
    assert "not approved" in error(response)["message"]
    assert not Release.objects.exists()


def test_files_are_the_teams_and_tampered_names_find_nothing(api, world):
    url = f"{V1}/releases/{world['R']}/files/"
    for persona in ("olga", "pat", "ada"):
        response = api[persona].get(url + "data-csv.zip")
        assert response.status_code == 404, persona
        assert error(response)["code"] == "not_found"
    for name in ("../manifest.json", "..%2Fmanifest.json", "MANIFEST.JSON", "manifest.json ",
                 "data-csv.zip.bak", "x" * 1000, "%2e%2e", "~", "data-csv.zip%3F"):
        response = api["ivan"].get(url + name)
        assert response.status_code == 404, name
    response = api["ivan"].get(url + "manifest.json%00")
    assert response.status_code == 400
    # Every GET is a recorded download: a HEAD, which would record one, is not offered.
    assert api["ivan"].client.head(url + "README.md", **api["ivan"].headers).status_code == 405
    assert not Download.objects.exists()
    # A release whose access ended is refused to its team too.
    Release.objects.filter(pk=world["R"]).update(expires_at=timezone.now())
    response = api["ivan"].get(url + "README.md")
    assert response.status_code == 400
    assert "access period" in error(response)["message"]
    assert not Download.objects.exists()


# -- tokens ------------------------------------------------------------------------------------


def test_a_token_without_the_scope_is_refused(people, world):
    releases_only = Api(token_text(people["ivan"], ["releases"]))
    response = releases_only.post(f"{V1}/requests/", fields())
    assert response.status_code == 403
    assert "requests" in error(response)["message"]
    assert DataRequest.objects.count() == 2
    requests_only = Api(token_text(people["ivan"], ["requests"]))
    response = requests_only.get(f"{V1}/releases/{world['R']}/files/README.md")
    assert response.status_code == 403
    assert "releases" in error(response)["message"]
    assert not Download.objects.exists()
    assert releases_only.get(f"{V1}/catalog/variables/").status_code == 200
    assert requests_only.get(f"{V1}/catalog/variables/").status_code == 200


def test_expired_revoked_and_missing_tokens_are_401(people, site_a):
    expired_text = token_text(people["ivan"], ["requests"])
    ApiToken.objects.filter(user=people["ivan"]).update(expires_at=timezone.now())
    revoked_text = token_text(people["carol"], ["requests"])
    api_token_revoke(token=ApiToken.objects.get(user=people["carol"]), acting_user=None)
    for text in (expired_text, revoked_text):
        response = Api(text).post(f"{V1}/requests/", fields(site_codes=["SITE-A"]))
        assert response.status_code == 401
        assert error(response)["code"] == "authentication_failed"
        assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    response = Client().get(f"{V1}/requests/")
    assert response.status_code == 401
    assert error(response)["code"] == "not_authenticated"
    assert not DataRequest.objects.exists()


# -- outside the test transaction --------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_release_requested_outside_a_test_transaction_is_built_after_commit(
        vocabulary, ivan, carol, cleo, chad, priya, committee_rules, site_a, alice,
        release_dir):
    for sex in ("F", "M", "F"):
        submitted_patient(site_a, alice, sex=sex)
    request = request_create(acting_user=ivan, **fields(site_codes=["SITE-A"]))
    request_submit(request=request, acting_user=ivan)
    vote_cast(request=request, acting_user=carol, choice="approve")
    vote_cast(request=request, acting_user=cleo, choice="approve")
    decision_record(request=request, acting_user=chad, k_anonymity=2)
    participation_answer(participation=request.participations.get(), acting_user=priya,
                         answer="opted_in")
    ivan_api = Api(token_text(ivan, ["requests", "releases"]))

    response = ivan_api.post(f"{V1}/requests/{request.pk}/releases/")
    assert response.status_code == 202
    # The task was queued on commit and (eager in tests) built the release.
    release = Release.objects.get(request=request)
    assert release.status == "ready" and release.patients == 3
    assert release.history.filter(history_change_reason="release requested",
                                  history_user=ivan).exists()
    response = ivan_api.get(f"{V1}/releases/{release.pk}/files/README.md")
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == (
        Path(release_dir) / str(release.pk) / "README.md").read_bytes()
    assert Download.objects.get().channel == "api"


# -- the schema --------------------------------------------------------------------------------

# Every path and method of the committee's API with the statuses it documents.
DOCUMENTED = {
    "/catalog/variables/": {"get": {"200", "401", "403"}},
    "/requests/": {"get": {"200", "401", "403", "404"},
                   "post": {"201", "400", "401", "403", "415"}},
    "/requests/{id}/": {"get": {"200", "401", "403", "404"},
                        "patch": {"200", "400", "401", "403", "404", "415"}},
    "/requests/{id}/submit/": {"post": {"200", "400", "401", "403", "404"}},
    "/requests/{id}/feasibility/": {"post": {"200", "401", "403", "404"}},
    "/requests/{id}/votes/": {"get": {"200", "401", "403", "404"},
                              "post": {"201", "400", "401", "403", "404", "415"}},
    "/requests/{id}/recusal/": {"post": {"201", "400", "401", "403", "404", "415"}},
    "/requests/{id}/decision/": {"post": {"201", "400", "401", "403", "404", "415"}},
    "/requests/{id}/releases/": {"get": {"200", "401", "403", "404"},
                                 "post": {"202", "400", "401", "403", "404"}},
    "/participations/": {"get": {"200", "401", "403", "404"}},
    "/participations/{id}/answer/": {"post": {"200", "400", "401", "403", "404", "415"}},
    "/releases/": {"get": {"200", "401", "403", "404"}},
    "/releases/{id}/": {"get": {"200", "401", "403", "404"}},
    "/releases/{id}/files/{name}": {"get": {"200", "400", "401", "403", "404"}},
    "/aggregates/": {"post": {"200", "400", "401", "403", "413", "415", "429"}},
    "/aggregates/dimensions/": {"get": {"200", "401", "403", "429"}},
    "/feasibility/": {"post": {"200", "400", "401", "403", "413", "415", "429"}},
    "/privacy-budget/": {"get": {"200", "401", "403"}},
}


def test_the_schema_documents_every_endpoint_and_status(client):
    response = client.get(f"{V1}/schema/", {"format": "json"})
    assert response.status_code == 200
    schema = json.loads(response.content)
    validate_schema(schema)
    # The risk models' endpoints are tests/predictions/test_api_scoring.py's.
    paths = {p.removeprefix(V1): ops for p, ops in schema["paths"].items()
             if p != f"{V1}/me/" and not p.startswith(f"{V1}/models/")}
    assert set(paths) == set(DOCUMENTED)
    for path, methods in DOCUMENTED.items():
        operations = {m: op for m, op in paths[path].items() if m != "parameters"}
        assert set(operations) == set(methods), path
        for method, statuses in methods.items():
            responses = operations[method]["responses"]
            # 429 and 503 (the rate limits) are on every operation (test_api_matrix.py).
            assert set(responses) == statuses | {"400", "429", "503"}, (path, method)
            for status in statuses - {"200", "201", "202"}:
                assert responses[status]["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/Error"}, (path, method, status)
            assert {"bearerAuth": []} in operations[method]["security"]
    file = paths["/releases/{id}/files/{name}"]["get"]["responses"]["200"]
    assert set(file["content"]) == {"application/octet-stream"}
    listed = paths["/requests/"]["get"]["responses"]["200"]["content"]["application/json"]
    assert listed["schema"] == {"$ref": "#/components/schemas/PaginatedDataRequestSummaryList"}
    components = schema["components"]["schemas"]
    assert set(components["DataRequestInputRequest"]["properties"]) == set(REQUEST_FIELDS)
    assert components["DataRequest"]["properties"]["votes"]["nullable"] is True
    # The YAML form is the same document.
    assert yaml.safe_load(client.get(f"{V1}/schema/").content)["paths"].keys() == \
        schema["paths"].keys()
