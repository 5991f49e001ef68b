"""Mapping files in and out: the registry's CSV (domain, local_term, vocabulary, code), Usagi
mapping files and OMOP SOURCE_TO_CONCEPT_MAP. An import is all-or-nothing: every row is
checked first, and any error refuses the whole file."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from django.contrib.auth.models import User
from django.db import transaction

from registry.csvsafe import spreadsheet_safe
from registry.errors import ValidationFailed
from registry.models import Concept, Domain, MappingStatus, Site, TermMapping
from registry.services.mapping import mapping_approve
from registry.services.terminology import site_term_get_or_create

OURS = ["domain", "local_term", "vocabulary", "code"]
STCM = ["source_code", "source_concept_id", "source_vocabulary_id", "source_code_description",
        "target_concept_id", "target_vocabulary_id", "valid_start_date", "valid_end_date",
        "invalid_reason"]
USAGI_REQUIRED = ["sourcecode", "sourcename", "mappingstatus", "conceptid"]


@dataclass
class MappingRow:
    line: int
    domain: str
    text: str
    concept: Concept


def _read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    raw = path.read_bytes()
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            text = raw.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        raise ValidationFailed(f"{path.name}: not UTF-8 or GB18030 text.")
    dialect = "excel-tab" if "\t" in text.splitlines()[0] else "excel"
    reader = csv.DictReader(io.StringIO(text), dialect=dialect)
    header = [h.strip().lower() for h in reader.fieldnames or []]
    rows = [{(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
            for row in reader]
    return header, rows


def mapping_file_read(path: Path, *, domain: str | None = None) -> list[MappingRow]:
    """Parse and check a mapping file; raises ValidationFailed listing every bad row."""
    header, rows = _read(path)
    errors: list[str] = []
    out: list[MappingRow] = []
    if set(OURS) <= set(header):
        kind = "ours"
    elif set(STCM[:6]) <= set(header):
        kind = "stcm"
    elif set(USAGI_REQUIRED) <= set(header):
        kind = "usagi"
        if domain not in Domain.values:
            raise ValidationFailed("A Usagi file has no domain column: give --domain.")
    else:
        raise ValidationFailed(f"{path.name}: not a mapping file (expected columns "
                               f"{', '.join(OURS)}, or Usagi, or SOURCE_TO_CONCEPT_MAP).")
    by_omop = {}
    if kind in ("stcm", "usagi"):
        ids = {r.get("target_concept_id") or r.get("conceptid") for r in rows}
        by_omop = {str(c.omop_concept_id): c for c in Concept.objects.filter(
            omop_concept_id__in=[int(i) for i in ids if i and i.isdigit()])}
    for line, row in enumerate(rows, start=2):
        if kind == "ours":
            row_domain, text = row["domain"], row["local_term"]
            concept = Concept.objects.filter(vocabulary__code=row["vocabulary"],
                                             code=row["code"]).first()
            where = f"{row['vocabulary']} {row['code']}"
            if row_domain not in Domain.values:
                errors.append(f"row {line}: unknown domain {row_domain!r}")
                continue
        elif kind == "stcm":
            if row.get("invalid_reason"):
                continue
            text = row["source_code"] or row["source_code_description"]
            concept = by_omop.get(row["target_concept_id"])
            where = f"concept_id {row['target_concept_id']}"
            row_domain = concept.domain if concept else ""
        else:
            if row["mappingstatus"].upper() != "APPROVED":
                continue
            text = row["sourcename"] or row["sourcecode"]
            concept = by_omop.get(row["conceptid"])
            where = f"conceptId {row['conceptid']}"
            row_domain = domain
        if not text:
            errors.append(f"row {line}: the local term is empty")
        elif concept is None:
            errors.append(f"row {line}: {where} is not in the registry's vocabularies")
        elif concept.domain != row_domain:
            errors.append(f"row {line}: {where} is a {concept.domain} concept, not "
                          f"{row_domain}")
        else:
            out.append(MappingRow(line, row_domain, text, concept))
    seen: dict[tuple[str, str], MappingRow] = {}
    for row in out:
        other = seen.setdefault((row.domain, row.text), row)
        if other.concept.pk != row.concept.pk:
            errors.append(f"row {row.line}: {row.text!r} is mapped differently in row "
                          f"{other.line}")
    if errors:
        raise ValidationFailed(f"{path.name}: " + "; ".join(errors))
    return out


@transaction.atomic
def mappings_import(*, site: Site, path: Path, acting_user: User | None,
                    domain: str | None = None) -> int:
    rows = mapping_file_read(path, domain=domain)
    for row in rows:
        term = site_term_get_or_create(site=site, domain=row.domain, text=row.text,
                                       acting_user=acting_user)
        mapping_approve(site_term=term, concept=row.concept, acting_user=acting_user,
                        method=TermMapping.Method.FILE, score=1.0,
                        reason=f"mapping file {path.name}")
    return len(rows)


def mappings_export(*, site: Site) -> tuple[str, int]:
    """The site's approved mappings as SOURCE_TO_CONCEPT_MAP (tab-delimited). Returns the text
    and how many targets have no OMOP concept id (exported as 0: load Athena files first)."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter="\t", lineterminator="\n")
    writer.writerow(STCM)
    missing = 0
    mappings = (TermMapping.objects.filter(site_term__site=site, status=MappingStatus.APPROVED)
                .select_related("site_term", "concept__vocabulary")
                .order_by("site_term__domain", "site_term__text"))
    for m in mappings:
        missing += m.concept.omop_concept_id is None
        writer.writerow([spreadsheet_safe(m.site_term.text), 0,
                         f"{site.code}_{m.site_term.domain}", spreadsheet_safe(m.site_term.text),
                         m.concept.omop_concept_id or 0, m.concept.vocabulary.code,
                         "19700101", "20991231", ""])
    return out.getvalue(), missing

