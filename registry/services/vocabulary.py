"""Loading OMOP/Athena vocabulary files (CONCEPT.csv, CONCEPT_SYNONYM.csv): tab-delimited, no
quoting, dates yyyyMMdd, names that may exceed 255 characters. Set-based and idempotent:
concepts are matched on (vocabulary, code) and updated in place; nothing is deleted."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

from django.contrib.auth.models import User
from django.db import connection, transaction

from registry.audit import bulk_create_audited, bulk_update_audited
from registry.errors import ValidationFailed
from registry.models import Concept, ConceptSynonym, Domain, Vocabulary

# The vocabularies the registry uses, and how Athena's domains map onto ours.
VOCABULARIES = {"ATC": "ATC", "LOINC": "LOINC", "ICD10": "ICD10", "ICD10CM": "ICD10",
                "ICDO3": "ICDO3", "UCUM": "UCUM"}
DOMAINS = {"Drug": Domain.DRUG, "Measurement": Domain.LAB, "Condition": Domain.CONDITION,
           "Unit": Domain.UNIT, "Observation": Domain.LAB}
CONCEPT_COLUMNS = ["concept_id", "concept_name", "domain_id", "vocabulary_id",
                   "concept_class_id", "standard_concept", "concept_code", "valid_start_date",
                   "valid_end_date", "invalid_reason"]
BATCH = 5000

csv.field_size_limit(10_000_000)


def _rows(path: Path, required: list[str]):
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = [h.strip().lower() for h in next(reader, [])]
        missing = [c for c in required if c not in header]
        if missing:
            raise ValidationFailed(f"{path.name}: missing column(s) {', '.join(missing)}.")
        positions = {name: header.index(name) for name in header}
        for number, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise ValidationFailed(f"{path.name} row {number}: {len(row)} fields, expected "
                                       f"{len(header)}.")
            yield number, {name: row[i] for name, i in positions.items()}


def vocabulary_load(directory: Path, *, acting_user: User | None,
                    progress: Callable[[str], None] = lambda m: None) -> dict[str, int]:
    """Load CONCEPT.csv (and CONCEPT_SYNONYM.csv if present) for the vocabularies we use."""
    concept_file = directory / "CONCEPT.csv"
    if not concept_file.exists():
        raise ValidationFailed(f"{concept_file} not found.")
    counts = {"read": 0, "created": 0, "updated": 0, "skipped": 0, "synonyms": 0}
    reason = f"vocabulary load from {directory.name}"
    with transaction.atomic():
        vocabularies = {}
        for athena, ours in VOCABULARIES.items():
            vocabulary, _ = Vocabulary.objects.get_or_create(code=ours, defaults={"name": ours})
            vocabularies[athena] = vocabulary
        omop_to_id: dict[int, int] = dict(Concept.objects.filter(
            omop_concept_id__isnull=False).values_list("omop_concept_id", "id"))
        batch: list[dict] = []

        def flush() -> None:
            _upsert(batch, vocabularies, omop_to_id, counts, acting_user, reason)
            batch.clear()
            progress(f"{counts['read']:,} concepts read")

        for _, row in _rows(concept_file, CONCEPT_COLUMNS):
            counts["read"] += 1
            if row["vocabulary_id"] not in VOCABULARIES or row["domain_id"] not in DOMAINS:
                counts["skipped"] += 1
                continue
            batch.append(row)
            if len(batch) >= BATCH:
                flush()
        flush()
        synonym_file = directory / "CONCEPT_SYNONYM.csv"
        if synonym_file.exists():
            counts["synonyms"] = _synonyms(synonym_file, omop_to_id, acting_user, reason)
    return counts


def _upsert(rows, vocabularies, omop_to_id, counts, acting_user, reason) -> None:
    if not rows:
        return
    keys = {(vocabularies[r["vocabulary_id"]].pk, r["concept_code"]) for r in rows}
    existing = {(c.vocabulary_id, c.code): c for c in Concept.objects.filter(
        vocabulary_id__in={v for v, _ in keys}, code__in={c for _, c in keys})}
    new, changed = [], []
    for r in rows:
        vocabulary = vocabularies[r["vocabulary_id"]]
        values = {"name_en": r["concept_name"][:1000], "domain": DOMAINS[r["domain_id"]],
                  "omop_concept_id": int(r["concept_id"]),
                  "is_active": not r["invalid_reason"]}
        concept = existing.get((vocabulary.pk, r["concept_code"]))
        if concept is None:
            concept = Concept(vocabulary=vocabulary, code=r["concept_code"], **values)
            existing[(vocabulary.pk, r["concept_code"])] = concept
            new.append(concept)
        elif any(getattr(concept, k) != v for k, v in values.items()):
            for k, v in values.items():
                setattr(concept, k, v)
            changed.append(concept)
    created = bulk_create_audited(Concept, new, acting_user=acting_user, reason=reason)
    if connection.vendor != "postgresql":  # ids are not returned by every backend
        created = list(Concept.objects.filter(omop_concept_id__in=[c.omop_concept_id
                                                                   for c in new]))
    bulk_update_audited(Concept, changed, ["name_en", "domain", "omop_concept_id",
                                           "is_active"], acting_user=acting_user, reason=reason)
    for concept in [*created, *changed]:
        omop_to_id[concept.omop_concept_id] = concept.pk
    counts["created"] += len(new)
    counts["updated"] += len(changed)


def _synonyms(path: Path, omop_to_id: dict[int, int], acting_user, reason) -> int:
    present = set(ConceptSynonym.objects.filter(concept_id__in=omop_to_id.values()).values_list(
        "concept_id", "name"))
    new = []
    for _, row in _rows(path, ["concept_id", "concept_synonym_name"]):
        concept_id = omop_to_id.get(int(row["concept_id"]))
        name = row["concept_synonym_name"][:1000]
        if concept_id is None or (concept_id, name) in present:
            continue
        present.add((concept_id, name))
        language = "zh" if any("\u4e00" <= ch <= "\u9fff" for ch in name) else "en"
        new.append(ConceptSynonym(concept_id=concept_id, name=name, language=language))
    bulk_create_audited(ConceptSynonym, new, acting_user=acting_user, reason=reason)
    return len(new)
