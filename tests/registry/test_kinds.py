"""The catalogue of record kinds agrees with the models, the rulebook, the forms, the extract
format and every list derived from it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.apps import apps
from django.db import models

from registry import access, extracts, kinds, rules
from registry.models import Concept, SiteTerm
from registry.selectors.bulk import KIND_MODELS
from registry.services import imports, mapping, terminology, workflow
from registry.synth.extracts import site_frames
from registry.synth.generator import generate_site, plan_sites
from registry.views.kinds import KINDS as FORM_KINDS

CATALOGUE = list(kinds.KINDS.values())


def _clinical_models() -> set[type[models.Model]]:
    """Every model of the clinical record (registry.models.clinical) that keeps history."""
    return {m for m in apps.get_app_config("registry").get_models()
            if m.__module__ == "registry.models.clinical" and hasattr(m, "history")}


def test_every_clinical_model_is_a_kind_once():
    assert set(kinds.CLINICAL_MODELS) == _clinical_models()
    assert len(kinds.CLINICAL_MODELS) == len(set(kinds.CLINICAL_MODELS))
    for kind in CATALOGUE:
        assert kind.name == kind.model._meta.model_name


def test_parents_come_first_and_exist():
    seen = set()
    for kind in CATALOGUE:
        assert kind.parent is None or kind.parent in seen, kind.name
        seen.add(kind.name)
    assert [k.name for k in CATALOGUE if k.parent is None] == [kinds.PATIENT]


@pytest.mark.parametrize("kind", CATALOGUE, ids=lambda k: k.name)
def test_natural_key_is_the_models_unique_constraint(kind):
    by_column = {f.name: f.attname for f in kind.model._meta.concrete_fields}
    constraints = [tuple(by_column[f] for f in c.fields) for c in kind.model._meta.constraints
                   if isinstance(c, models.UniqueConstraint) and c.condition is None]
    assert kind.natural_key in constraints


@pytest.mark.parametrize("kind", CATALOGUE, ids=lambda k: k.name)
def test_words_are_site_terms_mapped_to_concepts(kind):
    columns = {c.name for c in kind.extract_columns}
    for word in kind.words:
        assert kind.model._meta.get_field(word.term).related_model is SiteTerm
        assert kind.model._meta.get_field(word.concept).related_model is Concept
        assert word.column in columns
    # No site-term column of the model is missing from the catalogue.
    terms = {f.name for f in kind.model._meta.concrete_fields
             if f.is_relation and f.related_model is SiteTerm}
    assert terms == {w.term for w in kind.words}


@pytest.mark.parametrize("kind", CATALOGUE, ids=lambda k: k.name)
def test_extract_key_and_required_columns(kind):
    names = [c.name for c in kind.extract_columns]
    assert len(names) == len(set(names))
    assert set(kind.extract_key) <= set(names)
    assert names[0] == "patient_no"
    for column in kind.extract_columns:
        if column.kind != "text":
            assert column.kind in extracts.CELL_KINDS, column


def test_derived_lists_follow_the_catalogue():
    assert list(extracts.FILES) == [k.extract_file for k in CATALOGUE]
    assert {k.name: k.model for k in CATALOGUE} == workflow.RECORD_MODELS
    assert {k.name: k.model for k in CATALOGUE} == KIND_MODELS
    assert set(kinds.CLINICAL_MODELS) <= set(access.SITE_OWNED_MODELS)
    assert set(imports.RULE_KINDS.values()) == {k.name for k in kinds.RECORD_KINDS}
    uses = {(m, t) for domain_uses in mapping.USES.values() for m, t, _ in domain_uses}
    assert uses == {(k.model, w.term) for k in CATALOGUE for w in k.words}
    tables = {u for domain_uses in terminology.TERM_USES.values() for u in domain_uses}
    assert tables == {(k.model, w.term_column) for k in CATALOGUE for w in k.words}


def test_every_record_kind_has_a_form_and_every_rule_a_kind():
    assert set(FORM_KINDS) == {k.name for k in kinds.RECORD_KINDS}
    for name, form_kind in FORM_KINDS.items():
        assert form_kind.model is kinds.KINDS[name].model
        assert str(form_kind.label) == str(kinds.KINDS[name].label)
    for r in rules.RULES.values():
        assert r.kind in kinds.KINDS, r.code
        assert r.field in {f.name for f in kinds.KINDS[r.kind].model._meta.concrete_fields}


def test_the_extract_format_document_lists_the_catalogues_files_and_columns():
    """docs/extract-format.md names each file and each of its columns."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "extract-format.md").read_text()
    rows = {m[1]: m[2] for m in re.finditer(r"^\| (\w+)\.csv \| (.*) \|$", text, re.M)}
    assert list(rows) == [k.extract_file for k in CATALOGUE]
    for kind in CATALOGUE:
        named = set(re.findall(r"\b[a-z_0-9]+\b", rows[kind.extract_file]))
        assert {c.name for c in kind.extract_columns} <= named, kind.extract_file


def test_the_synthetic_extracts_write_the_catalogues_files():
    cohort = generate_site(plan_sites(n_sites=1, n_patients=30, seed=3)[0])
    frames = site_frames(cohort)
    assert list(frames) == [k.extract_file for k in CATALOGUE]
    for kind in CATALOGUE:
        assert set(frames[kind.extract_file].columns) <= {c.name for c in kind.extract_columns}
