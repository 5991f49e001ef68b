"""Every service of services/mapping.py that writes checks the acting user's role at the word's
site itself, whatever view (or none) calls it."""

from __future__ import annotations

import pytest

from registry.audit import system_user
from registry.errors import NotPermitted
from registry.models import Concept, DrugAdministration, MappingStatus, SiteTerm, TermMapping
from registry.services import clinical
from registry.services.mapping import (
    mapping_approve,
    mapping_reject,
    mapping_review_approve,
    recode,
    record_recode,
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


def _stale_row(term: SiteTerm) -> DrugAdministration:
    """The word's stored row, coded with another meaning than the word's (as a locked row a
    re-code left alone is), so that re-coding it would change it."""
    row = DrugAdministration.objects.filter(drug_term=term).get()
    DrugAdministration.objects.filter(pk=row.pk).update(drug=Concept.objects.get(code="L01XA02"))
    return DrugAdministration.objects.get(pk=row.pk)


def _writes(term: SiteTerm, user) -> dict:
    approved = term.mappings.get(status=MappingStatus.APPROVED)
    other = Concept.objects.get(code="L01XA02")
    return {
        "recode": lambda: recode(term, other, acting_user=user, reason="re-coded"),
        "recode_to_its_meaning": lambda: recode(term, approved.concept, acting_user=user,
                                                reason="re-coded"),
        "record_recode": lambda: record_recode(_stale_row(term), acting_user=user),
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
                                     "term_mark_unmappable", "term_suggestions_store",
                                     "recode", "recode_to_its_meaning", "record_recode"])
def test_no_one_outside_the_site_writes_its_mappings(request, word, persona, service):
    user = request.getfixturevalue(persona)
    if service == "record_recode":
        _stale_row(word)
    before = _snapshot(word)
    with pytest.raises(NotPermitted):
        _writes(word, user)[service]()
    assert _snapshot(word) == before


@pytest.mark.parametrize("service", ["mapping_approve", "mapping_review_approve",
                                     "mapping_reject", "term_mark_unmappable", "recode"])
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


@pytest.mark.django_db(transaction=True)
def test_the_system_and_the_sites_clerk_recode_to_the_words_meaning(word, alice):
    """An unattended job (no acting user) re-codes as before; a clerk of the site may bring
    rows to the meaning the word has (nothing to decide), never to another one."""
    row = _stale_row(word)
    version = row.version
    assert record_recode(row, acting_user=None) == ["drug"]
    stored = DrugAdministration.objects.get(pk=row.pk)
    assert stored.drug.code == "L01XA01" and stored.version == version + 1
    assert stored.history.latest().history_user == system_user()

    row = _stale_row(word)
    assert record_recode(row, acting_user=alice) == ["drug"]
    stored = DrugAdministration.objects.get(pk=row.pk)
    assert stored.drug.code == "L01XA01"
    assert stored.history.latest().history_user == alice

    _stale_row(word)
    meaning = word.mappings.get(status=MappingStatus.APPROVED).concept
    assert recode(word, meaning, acting_user=alice, reason="re-coded").changed == 1
    assert DrugAdministration.objects.get(pk=row.pk).drug.code == "L01XA01"
    other = Concept.objects.get(code="L01XA02")
    assert recode(word, other, acting_user=None, reason="system").changed == 1
    assert DrugAdministration.objects.get(pk=row.pk).drug == other
