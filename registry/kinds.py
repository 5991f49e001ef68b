"""The catalogue of record kinds: every kind of clinical record, listed once.

For each kind: its name (the model's name, used in URLs, data queries, rules and the bulk
reader), its model, its labels, the kind it hangs from, the columns that identify a record (its
natural key, as the database's unique constraint states it), its coded word columns (a site's
local word, the site term it is stored as, the standard concept it maps to, and the word's
domain), and its file in a site extract with that file's columns.

Everything that needs "the kinds" derives from this module: site scoping (registry.access), the
workflow's record kinds, the bulk reader and the cohort loader, mapping and terminology uses,
the extract format and the import. Adding a record kind or a column is a change here plus its
migration (and the kind's form and its import values where it has them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db import models
from django.utils.translation import gettext_lazy as _

from registry.models import (
    AdverseEvent,
    Cycle,
    Diagnosis,
    DrugAdministration,
    FollowUp,
    LabResult,
    Patient,
    TreatmentLine,
)
from registry.models.terminology import Domain


@dataclass(frozen=True)
class Column:
    """A column of an extract file: its name, whether every row must fill it, and how a cell
    is read (registry.extracts parses each `kind`)."""

    name: str
    required: bool = False
    kind: str = "text"


@dataclass(frozen=True)
class Word:
    """A coded word column: a site's local word in `column` of the extract, stored as the site
    term `term` and mapped to the concept `concept` of `domain`."""

    column: str
    term: str  # the model's foreign key to SiteTerm ("drug_term")
    concept: str  # the model's foreign key to Concept ("drug")
    domain: Domain

    @property
    def term_column(self) -> str:
        return f"{self.term}_id"

    @property
    def concept_column(self) -> str:
        return f"{self.concept}_id"


@dataclass(frozen=True)
class RecordKind:
    name: str
    model: type[models.Model]
    label: Any  # lazy translation
    label_plural: Any
    parent: str | None  # the kind a record of this kind belongs to
    natural_key: tuple[str, ...]  # the model's attnames its unique constraint names
    extract_file: str  # the file of a site extract ("labs" for labs.csv)
    extract_columns: tuple[Column, ...]
    extract_key: tuple[str, ...]  # the extract columns that identify a row
    words: tuple[Word, ...] = field(default=())

    @property
    def table(self) -> str:
        return self.model._meta.db_table


_C = Column

# Parents first: the order records are written and read in.
KINDS: dict[str, RecordKind] = {k.name: k for k in [
    RecordKind(
        "patient", Patient, _("Patient"), _("Patients"), None,
        ("site_id", "hospital_number_hash"),
        "patients",
        (_C("patient_no", True), _C("sex", True, "sex"), _C("birth_date", kind="date"),
         _C("birth_year", kind="year"), _C("department"), _C("consent_scope", kind="consent"),
         _C("consent_date", kind="date"), _C("withdrawn_date", kind="date")),
        ("patient_no",)),
    RecordKind(
        "diagnosis", Diagnosis, _("Diagnosis"), _("Diagnoses"), "patient",
        ("patient_id", "diagnosis_date", "cancer_term_id"),
        "diagnoses",
        (_C("patient_no", True), _C("diagnosis_date", True, "date"), _C("cancer", True),
         _C("morphology"), _C("stage_system"), _C("stage_group"), _C("t"), _C("n"), _C("m"),
         _C("ecog", kind="ecog"), _C("biomarkers")),
        ("patient_no", "diagnosis_date", "cancer"),
        (Word("cancer", "cancer_term", "cancer", Domain.CONDITION),
         Word("morphology", "morphology_term", "morphology", Domain.MORPHOLOGY))),
    RecordKind(
        "treatmentline", TreatmentLine, _("Treatment line"), _("Treatment lines"), "patient",
        ("patient_id", "line_no"),
        "regimens",
        (_C("patient_no", True), _C("line_no", True, "count"), _C("regimen"),
         _C("intent", kind="intent"), _C("start_date", True, "date"),
         _C("end_date", kind="date")),
        ("patient_no", "line_no"),
        (Word("regimen", "regimen_term", "regimen", Domain.REGIMEN),)),
    RecordKind(
        "cycle", Cycle, _("Cycle"), _("Cycles"), "treatmentline",
        ("line_id", "cycle_no"),
        "cycles",
        (_C("patient_no", True), _C("line_no", True, "count"), _C("cycle_no", True, "count"),
         _C("start_date", True, "date"), _C("length_days", kind="count"),
         _C("bsa_m2", kind="positive")),
        ("patient_no", "line_no", "cycle_no")),
    RecordKind(
        "drugadministration", DrugAdministration, _("Drug"), _("Drugs"), "cycle",
        ("cycle_id", "day", "drug_term_id"),
        "drugs",
        (_C("patient_no", True), _C("line_no", True, "count"), _C("cycle_no", True, "count"),
         _C("day", kind="count"), _C("drug", True), _C("dose", kind="positive"),
         _C("dose_unit", kind="dose_unit"), _C("route", kind="route"),
         _C("purpose", kind="purpose")),
        ("patient_no", "line_no", "cycle_no", "day", "drug"),
        (Word("drug", "drug_term", "drug", Domain.DRUG),)),
    RecordKind(
        "adverseevent", AdverseEvent, _("Adverse event"), _("Adverse events"), "patient",
        ("patient_id", "ae_term_id", "onset_date"),
        "adverse_events",
        (_C("patient_no", True), _C("term", True), _C("grade", True, "grade"),
         _C("onset_date", True, "date"), _C("resolved_date", kind="date"),
         _C("serious", kind="yesno"), _C("line_no", kind="count"),
         _C("cycle_no", kind="count")),
        ("patient_no", "term", "onset_date"),
        (Word("term", "ae_term", "ae", Domain.ADVERSE_EVENT),)),
    RecordKind(
        "labresult", LabResult, _("Lab result"), _("Lab results"), "patient",
        ("patient_id", "test_term_id", "collected_date"),
        "labs",
        (_C("patient_no", True), _C("collected_date", True, "date"), _C("test", True),
         _C("value", True, "lab_value"), _C("unit"), _C("line_no", kind="count"),
         _C("cycle_no", kind="count")),
        ("patient_no", "test", "collected_date"),
        (Word("test", "test_term", "lab", Domain.LAB),
         Word("unit", "unit_term", "unit", Domain.UNIT))),
    RecordKind(
        "followup", FollowUp, _("Follow-up"), _("Follow-ups"), "patient",
        ("patient_id", "followup_date"),
        "followups",
        (_C("patient_no", True), _C("followup_date", True, "date"),
         _C("vital_status", True, "vital"), _C("progression", kind="yesno"),
         _C("progression_date", kind="date"), _C("ecog", kind="ecog"),
         _C("cause_of_death")),
        ("patient_no", "followup_date")),
]}

PATIENT = "patient"

# The kinds recorded about a patient (everything but the patient itself), parents first.
RECORD_KINDS: tuple[RecordKind, ...] = tuple(k for k in KINDS.values() if k.parent)

# Every clinical model, parents first.
CLINICAL_MODELS: tuple[type[models.Model], ...] = tuple(k.model for k in KINDS.values())

# The kind of each model, and of each extract file.
BY_MODEL: dict[type[models.Model], RecordKind] = {k.model: k for k in KINDS.values()}
BY_FILE: dict[str, RecordKind] = {k.extract_file: k for k in KINDS.values()}


def kind_of(model: type[models.Model] | models.Model) -> RecordKind:
    return BY_MODEL[model if isinstance(model, type) else type(model)]


def word_uses(domain: str) -> list[tuple[RecordKind, Word]]:
    """Where a domain's words are used: each kind and word column that stores one."""
    return [(k, w) for k in KINDS.values() for w in k.words if w.domain == domain]
