"""Site terms, their mappings to concepts, and the starter vocabulary."""

from __future__ import annotations

import json
from pathlib import Path

from django.contrib.auth.models import User
from django.db import connection, transaction
from django.db.models import Model

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
TERM_USES: dict[str, list[tuple[type[Model], str]]] = {
    domain: [(kind.model, word.term_column) for kind, word in word_uses(domain)]
    for domain in Domain}

# A frequency moved by a change never goes below zero: rows entered in forms are counted only
# by the full recount, so a count an import lowers may have started below the truth.
_FREQUENCY_MOVED = "frequency = GREATEST(s.frequency + d.n, 0)"


def site_term_frequencies_refresh(*, site_id: int) -> int:
    """Recount how many rows use each of the site's terms: stored rows (set-based, one UPDATE
    per use) and the rows of its imports waiting for a mapping. Frequencies order the mapping
    review queue; they are derived data, not audited.

    Imports keep the counts up to date as they go (`site_term_frequencies_import_add`,
    `site_term_frequencies_waiting_move`); this full recount, proportional to the site's
    stored rows, is the repair (nightly, `site_term_frequencies_refresh_all`) that also counts
    what forms entered. Its first statement locks the site's terms, so an import adding to
    them waits for it or is waited for, and nothing is counted twice or lost."""
    updated = 0
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE registry_siteterm SET frequency = 0 WHERE site_id = %s", [site_id])
        for domain, uses in TERM_USES.items():
            for model, column in uses:
                # Table and column names come from the constant above, never from input.
                cursor.execute(
                    f"UPDATE registry_siteterm SET frequency = frequency + counts.n "  # noqa: S608
                    f"FROM (SELECT {column} AS term_id, COUNT(*) AS n "
                    f"FROM {model._meta.db_table} "
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


def site_term_frequencies_refresh_all() -> int:
    """The full recount of every site, each in its own transaction (the nightly repair)."""
    return sum(site_term_frequencies_refresh(site_id=site_id)
               for site_id in Site.objects.order_by("pk").values_list("pk", flat=True))


def _import_deltas(model: type[Model], uses: list[tuple[str, str]], batch: ImportBatch,
                   params: list) -> list[str]:
    """SQL of (domain, term_id, n) for the rows one import wrote into `model`'s table, from
    their history rows: each counts for its words, and each row it changed no longer counts
    for the words of its version before (the row's history row just before). Appends the
    parameters to `params`."""
    history = model.history.model._meta.db_table
    written = "h.import_batch_id = %s AND h.site_id = %s"
    parts = []
    for domain, column in uses:
        parts.append(f"SELECT %s::text, h.{column}, COUNT(*) FROM {history} h "  # noqa: S608
                     f"WHERE {written} GROUP BY h.{column}")
        params += [domain, batch.pk, batch.site_id]
    # `history_id + 0`: no index gives that order, so the version before is found by the
    # index on id among the row's few versions; ordered by history_id itself, a table without
    # statistics yet (just loaded) may be walked backwards along its primary key instead.
    before = ", ".join(column for _, column in uses)
    values = ", ".join(f"(%s::text, p.{column})" for _, column in uses)
    parts.append(f"SELECT u.domain, u.term_id, -1 FROM {history} h "  # noqa: S608
                 f"CROSS JOIN LATERAL (SELECT {before} FROM {history} q "
                 f"WHERE q.id = h.id AND q.history_id < h.history_id "
                 f"ORDER BY q.history_id + 0 DESC LIMIT 1) p "
                 f"CROSS JOIN LATERAL (VALUES {values}) u(domain, term_id) "
                 f"WHERE {written} AND h.history_type = '~'")
    params += [domain for domain, _ in uses] + [batch.pk, batch.site_id]
    return parts


def site_term_frequencies_import_add(*, batch: ImportBatch) -> int:
    """Add to the site's term frequencies what one import wrote, in the import's transaction
    (after its rows and their history rows are written): each created row counts for its
    words, each changed row for its words now and no longer for those of its version before.

    One UPDATE, proportional to the rows the import wrote (its history rows, found by the
    history tables' index on import_batch, and each changed row's version before by id), not
    to the rows the site holds; the counts are those a full recount
    (`site_term_frequencies_refresh`) gives when they were right before. Returns the number
    of terms whose frequency moved."""
    by_model: dict[type[Model], list[tuple[str, str]]] = {}
    for domain, uses in TERM_USES.items():
        for model, column in uses:
            by_model.setdefault(model, []).append((domain.value, column))
    params: list = []
    deltas = " UNION ALL ".join(part for model, uses in by_model.items()
                                for part in _import_deltas(model, uses, batch, params))
    with connection.cursor() as cursor:
        # Table and column names come from TERM_USES and the models, never from input.
        cursor.execute(
            f"UPDATE registry_siteterm s SET {_FREQUENCY_MOVED} "  # noqa: S608
            f"FROM (SELECT domain, term_id, SUM(n) AS n "
            f"FROM ({deltas}) AS uses(domain, term_id, n) "
            f"WHERE term_id IS NOT NULL GROUP BY domain, term_id) d "
            f"WHERE s.id = d.term_id AND s.domain = d.domain AND s.site_id = %s AND d.n <> 0",
            [*params, batch.site_id])
        return cursor.rowcount


def _waiting(status: str | None, unmapped: list[dict] | None) -> list[dict]:
    return (unmapped or []) if status == ImportBatch.Status.NEEDS_MAPPING else []


def site_term_frequencies_waiting_move(*, batch: ImportBatch,
                                       was: tuple[str, list[dict]] | None) -> int:
    """Keep the rows an import waits for counted on their words: while a batch is in "needs
    mapping", each word it waits for counts the rows waiting for it; when the batch changes
    (resumed, failed, imported, or waiting for other words) the difference moves, in one
    UPDATE. `was` is the batch's (status, unmapped) before the change (None for a new batch).
    Called with the status change, in its transaction."""
    if batch.dry_run:
        return 0
    moves: dict[tuple[str, str], int] = {}
    for sign, words in ((-1, _waiting(*(was or (None, None)))),
                        (1, _waiting(batch.status, batch.unmapped))):
        for word in words:
            key = (word["domain"], word["text"])
            moves[key] = moves.get(key, 0) + sign * int(word["rows"])
    moves = {key: n for key, n in moves.items() if n}
    if not moves:
        return 0
    domains, texts = zip(*moves, strict=True)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE registry_siteterm s SET {_FREQUENCY_MOVED} "  # noqa: S608
            "FROM unnest(%s::text[], %s::text[], %s::int[]) AS d(domain, text, n) "
            "WHERE s.site_id = %s AND s.domain = d.domain AND s.text = d.text",
            [list(domains), list(texts), list(moves.values()), batch.site_id])
        return cursor.rowcount
