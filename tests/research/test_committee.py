"""Data requests, votes with recusal and quorum, the chair's decision, sites' answers."""

from __future__ import annotations

import pytest
from django.core import mail

from registry.errors import NotPermitted, ValidationFailed
from research.models import DataRequest, Decision, Recusal, SiteParticipation, Vote
from research.services.committee import (
    decision_record,
    participation_answer,
    recusal_declare,
    tally,
    vote_cast,
)
from research.services.requests import request_create, request_submit, request_update
from tests.research.conftest import submitted_patient

pytestmark = pytest.mark.django_db

# In the catalog's order (the request keeps them so).
VARIABLES = ["patient.sex", "patient.age_at_diagnosis", "diagnosis.cancer",
             "diagnosis.stage_group", "cycle.start_date", "adverseevent.grade"]


def draft(user, site_codes=("SITE-A",), **overrides):
    fields = {"title": "Neutropenia under platinum doublets", "question": "How often?",
              "protocol_summary": "Retrospective cohort.", "purpose": "academic",
              "access_days": 365, "criteria": {"cancer": ["C34"]}, "variables": VARIABLES,
              "site_codes": list(site_codes), "team": []}
    fields.update(overrides)
    return request_create(acting_user=user, **fields)


@pytest.fixture
def cohort(site_a, site_b, alice, bob):
    return [submitted_patient(site_a, alice), submitted_patient(site_b, bob)]


@pytest.fixture
def submitted(ivan, cohort, committee_rules):
    request = draft(ivan, site_codes=("SITE-A", "SITE-B"))
    return request_submit(request=request, acting_user=ivan)


def test_a_draft_keeps_what_was_asked(ivan, site_a):
    request = draft(ivan, criteria={"cancer": "c34, C50", "diagnosis_year_from": "2018"})
    request.refresh_from_db()
    assert request.status == DataRequest.Status.DRAFT
    assert request.criteria == {"cancer": ["C34", "C50"], "diagnosis_year_from": 2018}
    assert request.variables == VARIABLES
    assert list(request.sites.values_list("code", flat=True)) == ["SITE-A"]
    assert request.history.earliest().history_change_reason == "request drafted"


@pytest.mark.parametrize("overrides, field", [
    ({"variables": ["patient.registry_id"]}, "variables"),
    ({"variables": ["patient.hospital_number_hash", "diagnosis.cancer"]}, "variables"),
    ({"variables": ["patient.shoe_size"]}, "variables"),
    ({"variables": "diagnosis.cancer"}, "variables"),
    ({"title": ""}, "title"),
    ({"title": "x" * 201}, "title"),
    ({"question": "\x00" * 0}, "question"),
    ({"purpose": "marketing"}, "purpose"),
    ({"access_days": 0}, "access_days"),
    ({"access_days": 10 ** 20}, "access_days"),
    ({"access_days": "nan"}, "access_days"),
    ({"criteria": {"cancer": ["DROP TABLE"]}}, "cancer"),
    ({"criteria": {"diagnosis_year_from": 2020, "diagnosis_year_to": 2010}},
     "diagnosis_year_to"),
    ({"criteria": {"diagnosis_year_from": 99999}}, "diagnosis_year_from"),
    ({"criteria": {"cancr": ["C34"]}}, "criteria"),
    ({"criteria": ["C34"]}, "criteria"),
    ({"site_codes": ["NOPE"]}, "sites"),
    ({"team": ["nobody"]}, "team"),
])
def test_bad_requests_are_refused_by_name_and_nothing_is_saved(ivan, site_a, overrides, field):
    with pytest.raises(ValidationFailed) as refused:
        draft(ivan, **overrides)
    assert field in refused.value.errors
    assert not DataRequest.objects.exists()


def test_direct_identifiers_are_named_in_the_refusal(ivan, site_a):
    with pytest.raises(ValidationFailed) as refused:
        draft(ivan, variables=["patient.registry_id", "diagnosis.cancer"])
    assert "patient.registry_id" in refused.value.errors["variables"][0]


@pytest.mark.parametrize("persona", ["alice", "carol", "mona", "ada"])
def test_only_investigators_and_partners_request(request, persona, site_a):
    with pytest.raises(NotPermitted):
        draft(request.getfixturevalue(persona))
    assert not DataRequest.objects.exists()


def test_an_empty_cohort_cannot_be_submitted(ivan, cohort):
    request = draft(ivan, criteria={"cancer": ["C50"]})
    with pytest.raises(ValidationFailed) as refused:
        request_submit(request=request, acting_user=ivan)
    assert "criteria" in refused.value.errors
    request.refresh_from_db()
    assert request.status == DataRequest.Status.DRAFT and request.revision == 0


def test_submission_notifies_the_committee(ivan, carol, cleo, cohort, committee_rules,
                                           django_capture_on_commit_callbacks):
    carol.email, cleo.email = "carol@example.org", "cleo@example.org"
    carol.save()
    cleo.save()
    request = draft(ivan)
    with django_capture_on_commit_callbacks(execute=True):
        request_submit(request=request, acting_user=ivan)
    request.refresh_from_db()
    assert request.status == DataRequest.Status.SUBMITTED and request.revision == 1
    assert sorted(m.to[0] for m in mail.outbox) == ["carol@example.org", "cleo@example.org"]
    assert request.reference in mail.outbox[0].subject


def test_a_submitted_request_cannot_be_edited(submitted, ivan):
    with pytest.raises(ValidationFailed):
        request_update(request=submitted, acting_user=ivan, title="Another")
    submitted.refresh_from_db()
    assert submitted.title == "Neutropenia under platinum doublets"


def test_votes_make_a_quorum_and_the_majority_decides(submitted, carol, cleo, chad):
    vote_cast(request=submitted, acting_user=carol, choice="approve")
    with pytest.raises(ValidationFailed, match="quorum"):
        decision_record(request=submitted, acting_user=chad)
    vote_cast(request=submitted, acting_user=cleo, choice="approve_conditions",
              comment="Report by site tier only.")
    decision = decision_record(request=submitted, acting_user=chad,
                               conditions="Report by site tier only.",
                               approved_quasi_identifiers=["patient.sex"])
    submitted.refresh_from_db()
    assert decision.outcome == "approve_conditions"
    assert submitted.status == DataRequest.Status.APPROVED_CONDITIONS
    assert decision.tally["cast"] == 2 and decision.tally["approve"] == 1
    assert decision.approved_quasi_identifiers == ["patient.sex"]
    assert decision.access_until is not None
    assert sorted(submitted.participations.values_list("site__code", "answer")) == [
        ("SITE-A", "pending"), ("SITE-B", "pending")]


def test_a_split_vote_sends_the_request_back_for_revision(submitted, carol, cleo, chad, ivan):
    vote_cast(request=submitted, acting_user=carol, choice="approve")
    vote_cast(request=submitted, acting_user=cleo, choice="reject", comment="No question.")
    decision = decision_record(request=submitted, acting_user=chad)
    submitted.refresh_from_db()
    assert decision.outcome == "revise"
    assert submitted.status == DataRequest.Status.REVISION
    assert not submitted.participations.exists()
    # The requester revises and submits again: a new revision, with fresh votes.
    request_update(request=submitted, acting_user=ivan, question="How often, by regimen?")
    request_submit(request=submitted, acting_user=ivan)
    submitted.refresh_from_db()
    assert submitted.revision == 2 and submitted.status == DataRequest.Status.SUBMITTED
    vote_cast(request=submitted, acting_user=carol, choice="approve")
    assert Vote.objects.filter(request=submitted, member=carol).count() == 2


def test_a_second_vote_is_refused(submitted, carol):
    vote_cast(request=submitted, acting_user=carol, choice="approve")
    with pytest.raises(ValidationFailed, match="already voted"):
        vote_cast(request=submitted, acting_user=carol, choice="reject", comment="Changed.")
    assert Vote.objects.get(request=submitted, member=carol).choice == "approve"


@pytest.mark.parametrize("persona", ["ivan", "alice", "mona", "pat", "ada"])
def test_non_members_cannot_vote(request, submitted, persona):
    with pytest.raises(NotPermitted):
        vote_cast(request=submitted, acting_user=request.getfixturevalue(persona),
                  choice="approve")
    assert not Vote.objects.exists()


def test_a_member_of_the_requesters_organisation_is_recused(affiliated, ivan, carol, cohort,
                                                            committee_rules):
    request = request_submit(request=draft(ivan), acting_user=ivan)
    with pytest.raises(NotPermitted, match="recused"):
        vote_cast(request=request, acting_user=carol, choice="approve")
    assert not Vote.objects.exists()
    assert Recusal.objects.get(request=request, member=carol).reason == "organisation"


def test_a_declared_conflict_withdraws_the_vote_and_bars_the_next(submitted, carol):
    vote_cast(request=submitted, acting_user=carol, choice="approve")
    recusal_declare(request=submitted, acting_user=carol, statement="I consult for them.")
    assert not Vote.objects.filter(member=carol).exists()
    with pytest.raises(NotPermitted):
        vote_cast(request=submitted, acting_user=carol, choice="approve")
    assert tally(submitted)["cast"] == 0


def test_only_the_chair_decides(submitted, carol, cleo):
    vote_cast(request=submitted, acting_user=carol, choice="approve")
    vote_cast(request=submitted, acting_user=cleo, choice="approve")
    with pytest.raises(NotPermitted):
        decision_record(request=submitted, acting_user=carol)
    assert not Decision.objects.exists()


def test_conditions_are_required_and_quasi_identifiers_must_have_been_asked(
        submitted, carol, cleo, chad):
    vote_cast(request=submitted, acting_user=carol, choice="approve_conditions",
              comment="Tiers only.")
    vote_cast(request=submitted, acting_user=cleo, choice="approve")
    with pytest.raises(ValidationFailed) as refused:
        decision_record(request=submitted, acting_user=chad)
    assert "conditions" in refused.value.errors
    with pytest.raises(ValidationFailed) as refused:
        decision_record(request=submitted, acting_user=chad, conditions="Tiers only.",
                        approved_quasi_identifiers=["patient.region"])
    assert "approved_quasi_identifiers" in refused.value.errors
    with pytest.raises(ValidationFailed) as refused:
        decision_record(request=submitted, acting_user=chad, conditions="Tiers only.",
                        k_anonymity=1)
    assert "k_anonymity" in refused.value.errors
    assert not Decision.objects.exists()


def test_site_pis_answer_for_their_own_site_only(submitted, carol, cleo, chad, priya, sam):
    vote_cast(request=submitted, acting_user=carol, choice="approve")
    vote_cast(request=submitted, acting_user=cleo, choice="approve")
    decision_record(request=submitted, acting_user=chad)
    at_a = submitted.participations.get(site__code="SITE-A")
    at_b = submitted.participations.get(site__code="SITE-B")
    with pytest.raises(NotPermitted):
        participation_answer(participation=at_a, acting_user=sam, answer="opted_in")
    participation_answer(participation=at_a, acting_user=priya, answer="opted_in")
    participation_answer(participation=at_b, acting_user=sam, answer="declined",
                         comment="Not this year.")
    assert dict(submitted.participations.values_list("site__code", "answer")) == {
        "SITE-A": SiteParticipation.Answer.OPTED_IN, "SITE-B": SiteParticipation.Answer.DECLINED}
    at_a.refresh_from_db()
    assert at_a.answered_by == priya and at_a.history.count() == 2
