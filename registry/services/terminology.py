"""Site terms, their mappings to concepts, and the starter vocabulary."""

from __future__ import annotations

import json
from pathlib import Path

from django.contrib.auth.models import User
from django.db import connection, transaction

from registry.audit import audited_save
from registry.errors import ValidationFailed
from registry.kinds import word_uses
from registry.models import (
    Concept,
    ConceptSynonym,
    Domain,
    ImportBatch,
    LabResult,
    MappingStatus,
    Site,
    SiteTerm,
    TermMapping,
    UnitConversion,
    Vocabulary,
)
from registry.textnorm import normalise_term, normalise_unit

STARTER_VOCABULARY = Path(__file__).resolve().parent.parent / "data" / "starter_vocabulary.json"


def normalise_for_domain(domain: str, text: str) -> str:
    return normalise_unit(text) if domain == Domain.UNIT else normalise_term(text)


def site_term_get_or_create(
    *, site: Site, domain: str, text: str, acting_user: User | None
) -> SiteTerm:
    """The site's term for `text` in `domain`, created (audited) on first use."""
    if domain not in Domain.values:
        raise ValidationFailed(f"Unknown terminology domain {domain!r}.", field="domain")
    text = (text or "").strip()
    if not text:
        raise ValidationFailed("The term is empty.", field=domain)
    if len(text) > 500:
        raise ValidationFailed("The term is longer than 500 characters.", field=domain)
    term = SiteTerm.objects.filter(site=site, domain=domain, text=text).first()
    if term is None:
        with transaction.atomic():
            term = audited_save(
                SiteTerm(site=site, domain=domain, text=text,
                         normalised=normalise_for_domain(domain, text)),
                acting_user=acting_user,
                reason="new local term",
            )
    return term


def approved_concept(term: SiteTerm | None) -> Concept | None:
    if term is None:
        return None
    mapping = (
        TermMapping.objects.filter(site_term=term, status=MappingStatus.APPROVED)
        .select_related("concept", "concept__vocabulary")
        .first()
    )
    return mapping.concept if mapping else None


def convert_to_canonical(
    *, lab: Concept, unit: Concept, value: float
) -> tuple[float | None, Concept | None]:
    """(value in the lab's canonical unit, canonical unit), or (None, canonical) if impossible."""
    canonical_code = lab.attributes.get("canonical_unit")
    if not canonical_code:
        return None, None
    canonical = Concept.objects.filter(vocabulary__code="UCUM", code=canonical_code).first()
    if canonical is None:
        return None, None
    if unit.pk == canonical.pk:
        return value, canonical
    conversion = (
        UnitConversion.objects.filter(lab=lab, from_unit=unit, to_unit=canonical).first()
        or UnitConversion.objects.filter(
            lab__isnull=True, from_unit=unit, to_unit=canonical
        ).first()
    )
    if conversion is None:
        return None, canonical
    return value * conversion.factor, canonical


def lab_canonical(*, lab: Concept | None, unit: Concept | None, value: float | None,
                  unit_given: bool, convert=convert_to_canonical
                  ) -> tuple[float | None, Concept | None, str]:
    """The one rule for a lab value's canonical form: (value in the lab's canonical unit,
    that unit, unit flag). A missing, unmapped or unconvertible unit is flagged and the
    canonical value stays empty, never stored in the wrong unit."""
    if not unit_given:
        return None, None, LabResult.UnitFlag.MISSING
    if lab is None or unit is None or value is None:
        return None, None, LabResult.UnitFlag.UNMAPPED
    canonical_value, canonical_unit = convert(lab=lab, unit=unit, value=value)
    if canonical_value is None:
        return None, None, LabResult.UnitFlag.UNCONVERTIBLE
    return canonical_value, canonical_unit, LabResult.UnitFlag.OK


def starter_vocabulary_load(*, acting_user: User | None = None, path: Path | None = None) -> dict:
    """Load the starter vocabulary shipped with the registry. Idempotent.

    Concepts are matched on (vocabulary, code); names, attributes and synonyms are brought up
    to date, nothing is deleted. Returns counts of what was created and updated.
    """
    data = json.loads((path or STARTER_VOCABULARY).read_text(encoding="utf-8"))
    counts = {"vocabularies": 0, "concepts_created": 0, "concepts_updated": 0,
              "synonyms": 0, "conversions": 0}
    reason = "starter vocabulary"
    with transaction.atomic():
        vocabularies = {}
        for item in data["vocabularies"]:
            vocabulary = Vocabulary.objects.filter(code=item["code"]).first()
            if vocabulary is None:
                vocabulary = Vocabulary(code=item["code"])
                counts["vocabularies"] += 1
            if (vocabulary.pk is None or vocabulary.name != item["name"]
                    or vocabulary.version != item["version"]):
                vocabulary.name, vocabulary.version = item["name"], item["version"]
                audited_save(vocabulary, acting_user=acting_user, reason=reason)
            vocabularies[item["code"]] = vocabulary
        concepts: dict[tuple[str, str], Concept] = {}
        for item in data["concepts"]:
            wanted = {"domain": item["domain"], "name_en": item["name_en"],
                      "name_zh": item["name_zh"], "attributes": item["attributes"]}
            concept = Concept.objects.filter(
                vocabulary=vocabularies[item["vocabulary"]], code=item["code"]
            ).first()
            if concept is None:
                concept = Concept(vocabulary=vocabularies[item["vocabulary"]], code=item["code"])
                counts["concepts_created"] += 1
            elif any(getattr(concept, k) != v for k, v in wanted.items()):
                counts["concepts_updated"] += 1
            else:
                wanted = {}
            if wanted or concept.pk is None:
                for key, value in wanted.items():
                    setattr(concept, key, value)
                audited_save(concept, acting_user=acting_user, reason=reason)
            concepts[(item["vocabulary"], item["code"])] = concept
            present = set(concept.synonyms.values_list("name", flat=True))
            for name in item["synonyms"]:
                if name not in present:
                    language = "zh" if any("\u4e00" <= ch <= "\u9fff" for ch in name) else "en"
                    audited_save(ConceptSynonym(concept=concept, name=name, language=language),
                                 acting_user=acting_user, reason=reason)
                    counts["synonyms"] += 1
        for item in data["conversions"]:
            lab = concepts[("LOINC", item["lab"])] if item["lab"] else None
            from_unit, to_unit = concepts[("UCUM", item["from"])], concepts[("UCUM", item["to"])]
            conversion = UnitConversion.objects.filter(
                lab=lab, from_unit=from_unit, to_unit=to_unit
            ).first()
            if conversion is None or conversion.factor != item["factor"]:
                conversion = conversion or UnitConversion(
                    lab=lab, from_unit=from_unit, to_unit=to_unit
                )
                conversion.factor = item["factor"]
                audited_save(conversion, acting_user=acting_user, reason=reason)
                counts["conversions"] += 1
    return counts


# Which clinical columns point at a site term, per domain: the uses a term's frequency counts.
TERM_USES = {domain: [(kind.table, word.term_column) for kind, word in word_uses(domain)]
             for domain in Domain}


def site_term_frequencies_refresh(*, site_id: int) -> int:
    """Recount how many rows use each of the site's terms: stored rows (set-based, one UPDATE
    per use) and the rows of its imports waiting for a mapping. Frequencies order the mapping
    review queue; they are derived data, not audited."""
    updated = 0
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE registry_siteterm SET frequency = 0 WHERE site_id = %s", [site_id])
        for domain, uses in TERM_USES.items():
            for table, column in uses:
                # Table and column names come from the constant above, never from input.
                cursor.execute(
                    f"UPDATE registry_siteterm SET frequency = frequency + counts.n "  # noqa: S608
                    f"FROM (SELECT {column} AS term_id, COUNT(*) AS n FROM {table} "
                    f"WHERE site_id = %s AND {column} IS NOT NULL GROUP BY {column}) counts "
                    f"WHERE registry_siteterm.id = counts.term_id "
                    f"AND registry_siteterm.domain = %s",
                    [site_id, domain.value],
                )
                updated += cursor.rowcount
        # Words of the site's imports waiting in "needs mapping" count the rows that wait
        # for them: those words have no stored row yet, and they are the queue's work.
        pending: dict[tuple[str, str], int] = {}
        for unmapped in ImportBatch.objects.filter(
                site_id=site_id, dry_run=False,
                status=ImportBatch.Status.NEEDS_MAPPING).values_list("unmapped", flat=True):
            for word in unmapped:
                key = (word["domain"], word["text"])
                pending[key] = pending.get(key, 0) + int(word["rows"])
        if pending:
            cursor.executemany(
                "UPDATE registry_siteterm SET frequency = frequency + %s "
                "WHERE site_id = %s AND domain = %s AND text = %s",
                [(rows, site_id, domain, text) for (domain, text), rows in pending.items()])
            updated += len(pending)
    return updated
