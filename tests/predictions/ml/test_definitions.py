"""The two risk models' definitions: codes from the starter vocabulary, tiers and actions."""

from __future__ import annotations

import pytest

from predictions.ml import definitions as d
from predictions.ml import vocabulary as v


def test_target_codes_are_the_vocabularys_own_toxicity_terms():
    concepts = v.concepts()
    for definition in d.DEFINITIONS.values():
        for term in definition.target_terms:
            concept = concepts[term.code]
            assert concept["vocabulary"] == "CTCAE"
            assert concept["attributes"]["toxicity"] == definition.name
            assert str(term.min_grade) in concept["attributes"]["grades"]
        # Every CTCAE term the vocabulary tags with this toxicity is a target term.
        tagged = {c["code"] for c in concepts.values()
                  if c["attributes"].get("toxicity") == definition.name}
        assert tagged == {t.code for t in definition.target_terms}


def test_cinv_targets_grade_two_and_neutropenia_grade_three():
    assert {(t.code, t.min_grade) for t in d.CINV.target_terms} == {
        ("Nausea", 2), ("Vomiting", 2)}
    assert {(t.code, t.min_grade) for t in d.NEUTROPENIA.target_terms} == {
        ("Neutrophil count decreased", 3), ("Febrile neutropenia", 3)}


@pytest.mark.parametrize(("model", "p", "tier", "action"), [
    ("cinv", 0.0, "low", "no_antiemetic"),
    ("cinv", 0.0999, "low", "no_antiemetic"),
    ("cinv", 0.10, "moderate", "one_or_two_antiemetics"),
    ("cinv", 0.90, "moderate", "one_or_two_antiemetics"),
    ("cinv", 0.9001, "high", "three_antiemetics"),
    ("cinv", 1.0, "high", "three_antiemetics"),
    ("neutropenia", 0.0999, "low", "no_gcsf"),
    ("neutropenia", 0.10, "intermediate", "consider_gcsf"),
    ("neutropenia", 0.1999, "intermediate", "consider_gcsf"),
    ("neutropenia", 0.20, "high", "primary_gcsf"),
    ("neutropenia", 1.0, "high", "primary_gcsf"),
])
def test_tier_of_follows_the_guideline_cut_offs(model, p, tier, action):
    assert d.tier_of(model, p) == d.TierResult(tier, action)


def test_tiers_cover_zero_to_one_without_overlap():
    for definition in d.DEFINITIONS.values():
        for i in range(1001):
            p = i / 1000
            assert sum(t.contains(p) for t in definition.tiers) == 1, (definition.name, p)


def test_bad_inputs_are_refused_by_name():
    with pytest.raises(ValueError, match="1.2"):
        d.tier_of("cinv", 1.2)
    with pytest.raises(d.UnknownRiskModel, match="fever"):
        d.tier_of("fever", 0.5)


def test_features_are_unique_and_the_guideline_counts_match_the_classes():
    for definition in d.DEFINITIONS.values():
        assert len(set(definition.features)) == len(definition.features)
    assert set(d.ANTIEMETIC_GUIDELINE_AGENTS) == set(v.EMETOGENIC_CLASSES)


def test_regimen_classes_come_from_the_vocabulary():
    plan = v.regimen_cycle_classes().set_index(["regimen_code", "cycle_no"])
    assert plan.loc[("REG-PEM-CIS", 1), "emetogenic_class"] == "high"  # cisplatin
    assert plan.loc[("REG-FOLFOX", 1), "emetogenic_class"] == "moderate"  # oxaliplatin
    assert plan.loc[("REG-AC-T", 1), "emetogenic_class"] == "high"  # doxorubicin 60 mg/m2
    # The vocabulary gives AC-T a regimen-wide class, which applies to its paclitaxel phase too.
    assert plan.loc[("REG-AC-T", 5), "emetogenic_class"] == "high"
    assert len(plan.loc["REG-AC-T"]) == 8
    assert plan.loc[("REG-FOLFIRINOX", 1), "fn_risk"] == "high"
    assert plan.loc[("REG-PAC-CARBO", 1), "emetogenic_class"] == "high"  # carboplatin AUC 5
