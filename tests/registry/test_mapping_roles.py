"""Every service of services/mapping.py that writes checks the acting user's role at the word's
site itself, whatever view (or none) calls it."""

from __future__ import annotations

import pytest

from registry.errors import NotPermitted
from registry.models import Concept, DrugAdministration, MappingStatus, SiteTerm, TermMapping
from registry.services import clinical
from registry.services.mapping import (
    mapping_approve,
    mapping_reject,
    mapping_review_approve,
    term_mark_unmappable,
    term_resolve,
    term_suggestions_store,
)
from tests.registry import factories

pytestmark = pytest.mark.usefixtures("vocabulary")

OUTSIDERS = ["bob", "pat", "ivan", "carol"]  # clerk of site B, partner, investigator, committee


def _snapshot(term: SiteTerm) -> tuple:
    """Everything a mapping service could write about the word and the rows that use it."""
    mappings = sorted(TermMapping.objects.filter(site_term=term)
                      .values_list("pk", "concept_id", "status", "reviewed_by_id"))
    drugs = sorted(DrugAdministration.objects.filter(drug_term=term)
                   .values_list("pk", "drug_id", "version"))
    term = SiteTerm.objects.get(pk=term.pk)
    return (mappings, drugs, term.unmappable, TermMapping.history.count(),
            DrugAdministration.history.count(), SiteTerm.history.count())


@pytest.fixture
def word(site_a, alice, mona):
    """A drug word of site A used by a stored row, with an approved meaning and a suggestion."""
    patient = factories.full_record(site_a, alice)
    cycle = patient.cycles.get()
    clinical.drug_administration_record(cycle=cycle, drug="顺铂(本院)", day=2, dose="5",
                                        dose_unit="mg", acting_user=alice)
    term = SiteTerm.objects.get(site=site_a, domain="drug", text="顺铂(本院)")
    mapping_approve(site_term=term, concept=Concept.objects.get(code="L01XA01"),
                    acting_user=mona)
    TermMapping.objects.get_or_create(site_term=term, concept=Concept.objects.get(code="L01XA02"),
                                      defaults={"status": MappingStatus.SUGGESTED, "score": 0.5,
                                                "method": TermMapping.Method.FUZZY})
    return term


def _writes(term: SiteTerm, user) -> dict:
    approved = term.mappings.get(status=MappingStatus.APPROVED)
    other = Concept.objects.get(code="L01XA02")
    return {
        "mapping_approve": lambda: mapping_approve(site_term=term, concept=other,
                                                   acting_user=user),
        "mapping_approve_as_policy": lambda: mapping_approve(
            site_term=term, concept=other, acting_user=user,
            method=TermMapping.Method.EXACT, score=1.0),
        "mapping_review_approve": lambda: mapping_review_approve(term=term, concept=other,
                                                                 acting_user=user),
        "mapping_reject": lambda: mapping_reject(mapping=approved, acting_user=user),
        "term_mark_unmappable": lambda: term_mark_unmappable(term=term, acting_user=user,
                                                             reason="no such drug"),
        "term_suggestions_store": lambda: term_suggestions_store(term, acting_user=user),
    }


@pytest.mark.parametrize("persona", OUTSIDERS)
@pytest.mark.parametrize("service", ["mapping_approve", "mapping_approve_as_policy",
                                     "mapping_review_approve", "mapping_reject",
                                     "term_mark_unmappable", "term_suggestions_store"])
def test_no_one_outside_the_site_writes_its_mappings(request, word, persona, service):
    user = request.getfixturevalue(persona)
    before = _snapshot(word)
    with pytest.raises(NotPermitted):
        _writes(word, user)[service]()
    assert _snapshot(word) == before


@pytest.mark.parametrize("service", ["mapping_approve", "mapping_review_approve",
                                     "mapping_reject", "term_mark_unmappable"])
def test_a_clerk_does_not_decide_what_a_word_means(word, alice, service):
    before = _snapshot(word)
    with pytest.raises(NotPermitted):
        _writes(word, alice)[service]()
    assert _snapshot(word) == before


@pytest.mark.django_db(transaction=True)
def test_the_sites_monitor_rejects_and_rows_are_recoded(word, mona):
    approved = word.mappings.get(status=MappingStatus.APPROVED)
    row = DrugAdministration.objects.get(drug_term=word)
    assert row.drug.code == "L01XA01"

    mapping_reject(mapping=approved, acting_user=mona, reason="not this drug")

    assert TermMapping.objects.get(pk=approved.pk).status == MappingStatus.REJECTED
    assert TermMapping.objects.get(pk=approved.pk).reviewed_by == mona
    stored = DrugAdministration.objects.get(pk=row.pk)
    assert stored.drug is None and stored.version == row.version + 1
    assert TermMapping.history.filter(id=approved.pk).latest().history_user == mona


@pytest.mark.django_db(transaction=True)
def test_a_clerk_codes_a_word_the_sites_policy_approves(site_a, alice):
    site_a.auto_approve_min_score = 0.95
    site_a.save()
    term, concept = term_resolve(site=site_a, domain="drug", text="顺铂", acting_user=alice)
    assert concept.code == "L01XA01"
    mapping = term.mappings.get(status=MappingStatus.APPROVED)
    assert mapping.method == TermMapping.Method.EXACT
    assert TermMapping.history.filter(id=mapping.pk).latest().history_user == alice
