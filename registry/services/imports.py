"""Site extract import: read -> check every cell -> resolve local words -> write by natural
keys in one transaction -> report.

All-or-nothing: any error refuses the whole extract and writes no clinical row; the batch keeps
the report (file, row, column, value, message). Words without an approved mapping stop the
import in "needs mapping" (each word listed with its suggestions); once they are mapped,
`extract_import(batch=...)` finishes it without a new upload. Re-importing the same extract
changes nothing; a corrected one updates only the changed rows, each change audited with the
import as its reason, and every written row records its batch.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from registry.audit import (
    audited_save,
    bulk_update_audited,
    copy_create_audited,
    copy_insert_audited,
)
from registry.biomarkers import parse_biomarkers
from registry.extracts import (
    WORDS,
    ExtractFile,
    ExtractRefused,
    Problem,
    check_cells,
    check_columns,
    open_extract,
    read_file,
)
from registry.models import (
    AdverseEvent,
    Concept,
    Cycle,
    Department,
    Diagnosis,
    DrugAdministration,
    FollowUp,
    ImportBatch,
    LabResult,
    Patient,
    RecordStatus,
    Role,
    Site,
    SiteTerm,
    TreatmentLine,
)
from registry.models.clinical import new_registry_id
from registry.pseudonyms import hospital_number_hash
from registry.services.clinical import followup_summary_refresh
from registry.services.mapping import suggest, term_resolve
from registry.services.organisation import require_site_role
from registry.services.terminology import approved_concept, convert_to_canonical, lab_canonical

IMPORT_ROLES = (Role.CLERK, Role.MONITOR)


class _Refused(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems


def _progress(batch: ImportBatch, percent: int, stage: str,
              callback: Callable[[str], None]) -> None:
    ImportBatch.objects.filter(pk=batch.pk).update(progress=percent, stage=stage)
    batch.progress, batch.stage = percent, stage
    callback(f"{percent:3d}% {stage}")


def batch_create(*, site: Site, path: Path, acting_user: User | None, dry_run: bool = False,
                 source_name: str | None = None) -> ImportBatch:
    if acting_user is not None:
        require_site_role(acting_user, site, IMPORT_ROLES)
    return audited_save(ImportBatch(site=site, uploaded_by=acting_user, dry_run=dry_run,
                                    source_name=source_name or Path(path).name,
                                    stored_path=str(path)),
                        acting_user=acting_user, reason="extract received")


def extract_import(batch: ImportBatch, *, progress: Callable[[str], None] = lambda m: None
                   ) -> ImportBatch:
    """Run (or resume) an import batch to one of: failed, needs_mapping, checked, imported."""
    user, site = batch.uploaded_by, batch.site
    batch.status, batch.errors, batch.unmapped = ImportBatch.Status.RUNNING, [], []
    audited_save(batch, acting_user=user, reason="import started")
    try:
        _progress(batch, 5, "reading", progress)
        files = _read(Path(batch.stored_path))
        batch.files = {f.filename: {"sha256": f.sha256, "bytes": f.size, "rows": len(f.raw),
                                    "encoding": f.encoding} for f in files.values()}
        _progress(batch, 20, "checking every cell", progress)
        _check(files, site)
        _progress(batch, 40, "resolving local words", progress)
        concepts, unmapped = _resolve(files, site, user, dry_run=batch.dry_run)
        if unmapped:
            batch.status, batch.unmapped = ImportBatch.Status.NEEDS_MAPPING, unmapped
            return _finish(batch, progress)
        _check_rules(files, site, concepts)
        if batch.dry_run:
            batch.status = ImportBatch.Status.CHECKED
            return _finish(batch, progress)
        _progress(batch, 60, "writing", progress)
        with transaction.atomic():
            batch.counts = _Writer(batch, files, concepts).write()
        batch.status = ImportBatch.Status.IMPORTED
    except ExtractRefused as exc:
        batch.status = ImportBatch.Status.FAILED
        batch.errors = [Problem(Path(batch.stored_path).name, 0, "", "", str(exc)).as_dict()]
    except _Refused as exc:
        batch.status = ImportBatch.Status.FAILED
        batch.errors = [p.as_dict() for p in exc.problems]
    return _finish(batch, progress)


def _finish(batch: ImportBatch, progress) -> ImportBatch:
    batch.finished_at = timezone.now()
    batch.progress = 100
    batch.stage = batch.get_status_display()
    audited_save(batch, acting_user=batch.uploaded_by, reason=f"import {batch.status}")
    progress(f"100% {batch.stage}")
    return batch


def _read(path: Path) -> dict[str, ExtractFile]:
    if not path.exists():
        raise ExtractRefused(f"{path} no longer exists; upload the extract again.")
    return {key: read_file(key, name, content)
            for key, (name, content) in open_extract(path).items()}


def _check(files: dict[str, ExtractFile], site: Site) -> None:
    problems: list[Problem] = []
    today = pd.Timestamp(timezone.localdate())
    for extract in files.values():
        if check_columns(extract, problems):
            check_cells(extract, problems, today)
    if problems:
        raise _Refused(problems)
    # Every child row's patient, line and cycle must exist in the extract or the registry.
    in_file = set(files["patients"].raw["patient_no"]) if "patients" in files else set()
    existing_numbers, existing_lines, existing_cycles = _existing_structure(site, files)
    patients = in_file | existing_numbers
    lines = set(existing_lines)
    if "regimens" in files:
        lines |= set(zip(files["regimens"].raw["patient_no"],
                         files["regimens"].parsed["line_no"], strict=True))
    cycles = set(existing_cycles)
    if "cycles" in files:
        cycles |= set(zip(files["cycles"].raw["patient_no"], files["cycles"].parsed["line_no"],
                          files["cycles"].parsed["cycle_no"], strict=True))
    for extract in files.values():
        if extract.name == "patients":
            continue
        number = extract.raw["patient_no"]
        missing = ~number.isin(patients)
        _report(problems, extract, missing, "patient_no", number,
                "no such patient in patients.csv or the registry")
        parsed = extract.parsed
        if extract.name == "cycles":
            keys = pd.Series(list(zip(number, parsed["line_no"], strict=True)),
                             index=number.index)
            _report(problems, extract, ~missing & ~keys.isin(lines), "line_no",
                    parsed["line_no"], "no such line in regimens.csv or the registry")
        elif "cycle_no" in parsed and "line_no" in parsed:
            given = parsed["cycle_no"].notna() & parsed["line_no"].notna()
            keys = pd.Series(list(zip(number, parsed["line_no"], parsed["cycle_no"],
                                      strict=True)), index=number.index)
            _report(problems, extract, ~missing & given & ~keys.isin(cycles), "cycle_no",
                    parsed["cycle_no"], "no such cycle in cycles.csv or the registry")
    if problems:
        raise _Refused(problems)


def _report(problems: list[Problem], extract: ExtractFile, mask: pd.Series, column: str,
            values: pd.Series, message: str) -> None:
    for index in mask[mask].index:
        problems.append(Problem(extract.filename, int(index) + 2, column,
                                str(values.loc[index]), message))


def _existing_structure(site: Site, files) -> tuple[set, set, set]:
    """The extract's patient numbers already registered, and their lines and cycles."""
    numbers = set()
    for extract in files.values():
        numbers |= set(extract.raw["patient_no"])
    by_hash = {hospital_number_hash(site.code, n): n for n in numbers}
    patients = dict(Patient.objects.filter(site=site, hospital_number_hash__in=list(by_hash))
                    .values_list("pk", "hospital_number_hash"))
    lines = {(by_hash[patients[p]], n) for p, n in TreatmentLine.objects.filter(
        patient_id__in=list(patients)).values_list("patient_id", "line_no")}
    cycles = {(by_hash[patients[p]], line, c) for p, line, c in Cycle.objects.filter(
        patient_id__in=list(patients)).values_list("patient_id", "line__line_no", "cycle_no")}
    return {by_hash[h] for h in patients.values()}, lines, cycles


def _resolve(files, site, user, *, dry_run: bool):
    """{(domain, word): (site term, concept)} and the words still needing a mapping."""
    words: dict[tuple[str, str], int] = defaultdict(int)
    for (file_key, column), domain in WORDS.items():
        if file_key in files and column in files[file_key].raw.columns:
            for word, count in files[file_key].raw[column].value_counts().items():
                if word:
                    words[(domain, word)] += int(count)
    resolved, unmapped = {}, []
    for (domain, word), count in sorted(words.items()):
        if dry_run:
            term = SiteTerm.objects.filter(site=site, domain=domain, text=word).first()
            concept = approved_concept(term)
        else:
            term, concept = term_resolve(site=site, domain=domain, text=word, acting_user=user)
        if concept is None:
            unmapped.append({"domain": domain, "text": word, "rows": count,
                             "suggestions": [s.as_dict() for s in suggest(domain, word,
                                                                          site=site, limit=3)]})
        resolved[(domain, word)] = (term, concept)
    return resolved, unmapped


def _check_rules(files, site, concepts) -> None:
    """Rules that need the words' meanings: grades the CTCAE term defines."""
    problems = []
    if "adverse_events" in files:
        extract = files["adverse_events"]
        for index, (word, grade) in enumerate(zip(extract.raw["term"],
                                                  extract.parsed["grade"], strict=True)):
            concept = concepts[("adverse_event", word)][1]
            allowed = concept.allowed_grades() if concept else set()
            if allowed and int(grade) not in allowed:
                problems.append(Problem(extract.filename, index + 2, "grade", str(grade),
                                        f"grade {grade} is not defined for {concept.name_en} "
                                        f"(allowed: {', '.join(map(str, sorted(allowed)))})"))
    if problems:
        raise _Refused(problems)


def _value(value: Any) -> Any:
    if value is None or (not isinstance(value, dict | list) and pd.isna(value)):
        return None
    if hasattr(value, "item"):
        return value.item()
    return value


def _records(frame: pd.DataFrame, *, text: bool = False) -> list[dict]:
    """The frame's rows as dicts of Python values, missing values as None (column-wise);
    `text` frames (the cells as read, all strings) are taken as they are."""
    columns = {}
    for name in frame.columns:
        series = frame[name]
        values = series.tolist()
        if text:
            pass
        elif series.dtype == object:
            values = [_value(v) for v in values]
        else:
            missing = series.isna().to_numpy()
            if missing.any():
                values = [None if m else v for v, m in zip(values, missing, strict=True)]
        columns[name] = values
    names = list(columns)
    return [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]


# Rows turned into dicts and written per COPY at a time (bounds an import's memory).
CHUNK_ROWS = 50_000
_WRITTEN = object()  # marks a natural key this import has already written


def _attnames(model) -> dict[str, tuple[str, bool]]:
    """Field name -> (column attribute, is a foreign key) for the model's concrete fields."""
    return {f.name: (f.attname, f.is_relation) for f in model._meta.concrete_fields}


class _Writer:
    """Upserts by natural key, table by table, parents first."""

    def __init__(self, batch: ImportBatch, files, concepts) -> None:
        self.batch, self.files, self.concepts = batch, files, concepts
        self.site = batch.site
        self.user = batch.uploaded_by
        self.reason = f"import {batch.pk} ({batch.source_name})"
        self.counts: dict[str, dict[str, int]] = {}
        self.problems: list[Problem] = []
        self.factors: dict[tuple[int, int], tuple] = {}

    def write(self) -> dict:
        self.patients = self._patients()
        self._upsert(
            TreatmentLine, "regimens", lambda r, p: (p["patient"].pk, r["line_no"]),
            lambda m: (m.patient_id, m.line_no), self._line_values)
        self._upsert(Diagnosis, "diagnoses",
                     lambda r, p: (p["patient"].pk, r["diagnosis_date"],
                                   self._term("condition", p["raw"]["cancer"]).pk),
                     lambda m: (m.patient_id, m.diagnosis_date, m.cancer_term_id),
                     self._diagnosis_values)
        self.all_lines = {(m.patient_id, m.line_no): m for m in TreatmentLine.objects.filter(
            patient_id__in=[p.pk for p in self.patients.values()])}
        self._upsert(Cycle, "cycles", lambda r, p: (p["patient"].pk, r["line_no"], r["cycle_no"]),
                     lambda m: (m.patient_id, m.line.line_no, m.cycle_no), self._cycle_values,
                     select=("line",))
        self.cycles = {(m.patient_id, m.line.line_no, m.cycle_no): m for m in
                       Cycle.objects.filter(patient_id__in=[p.pk for p in
                                                            self.patients.values()])
                       .select_related("line")}
        self._upsert(DrugAdministration, "drugs",
                     lambda r, p: (p["patient"].pk, r["line_no"], r["cycle_no"], r["day"] or 1,
                                   self._term("drug", p["raw"]["drug"]).pk),
                     lambda m: (m.patient_id, m.cycle.line.line_no, m.cycle.cycle_no, m.day,
                                m.drug_term_id), self._drug_values, select=("cycle__line",))
        self._upsert(AdverseEvent, "adverse_events",
                     lambda r, p: (p["patient"].pk, self._term("adverse_event",
                                                               p["raw"]["term"]).pk,
                                   r["onset_date"]),
                     lambda m: (m.patient_id, m.ae_term_id, m.onset_date), self._ae_values)
        self._upsert(LabResult, "labs",
                     lambda r, p: (p["patient"].pk, self._term("lab", p["raw"]["test"]).pk,
                                   r["collected_date"]),
                     lambda m: (m.patient_id, m.test_term_id, m.collected_date),
                     self._lab_values)
        self._upsert(FollowUp, "followups", lambda r, p: (p["patient"].pk, r["followup_date"]),
                     lambda m: (m.patient_id, m.followup_date), self._followup_values)
        if "followups" in self.files:
            followup_summary_refresh([p.pk for p in self.patients.values()])
        if self.problems:
            raise _Refused(self.problems)
        return self.counts

    # -- helpers -------------------------------------------------------------------------------

    def _term(self, domain: str, word: str) -> SiteTerm | None:
        return self.concepts[(domain, word)][0] if word else None

    def _concept(self, domain: str, word: str) -> Concept | None:
        return self.concepts[(domain, word)][1] if word else None

    def _rows(self, key: str):
        if key not in self.files:
            return
        extract = self.files[key]
        # Chunk by chunk, so a large file never exists as dicts all at once.
        for start in range(0, len(extract.raw), CHUNK_ROWS):
            stop = start + CHUNK_ROWS
            raw = _records(extract.raw.iloc[start:stop], text=True)
            parsed = _records(extract.parsed.iloc[start:stop])
            for index, (r, p) in enumerate(zip(raw, parsed, strict=True), start):
                yield index + 2, p, r

    def _count(self, table: str, kind: str, n: int = 1) -> None:
        self.counts.setdefault(table, {"created": 0, "updated": 0, "unchanged": 0})
        self.counts[table][kind] += n

    def _patients(self) -> dict[str, Patient]:
        numbers = set()
        for extract in self.files.values():
            numbers |= set(extract.raw["patient_no"])
        hashes = {n: hospital_number_hash(self.site.code, n) for n in numbers}
        existing = {p.hospital_number_hash: p for p in Patient.objects.filter(
            site=self.site, hospital_number_hash__in=list(hashes.values()))}
        departments = {d.name: d for d in Department.objects.filter(site=self.site)}
        new, changed = [], []
        for line, row, raw in self._rows("patients"):
            birth_year = row.get("birth_year") or (row["birth_date"].year
                                                   if row.get("birth_date") else None)
            name = raw.get("department", "")
            if name and name not in departments:
                departments[name] = Department.objects.create(site=self.site, name=name)
            values = {"sex": row["sex"], "birth_year": birth_year,
                      "department": departments.get(name) if name else None,
                      "consent_scope": row.get("consent_scope") or "academic",
                      "consent_date": row.get("consent_date"),
                      "withdrawn_date": row.get("withdrawn_date")}
            patient = existing.get(hashes[raw["patient_no"]])
            if patient is None:
                patient = Patient(site=self.site, hospital_number_hash=hashes[raw["patient_no"]],
                                  registry_id=new_registry_id(), status=RecordStatus.SUBMITTED,
                                  import_batch=self.batch, **values)
                existing[patient.hospital_number_hash] = patient
                new.append(patient)
            elif self._apply(patient, values, "patients", line):
                changed.append(patient)
            else:
                self._count("patients", "unchanged")
        self._save(Patient, "patients", new, changed,
                   ["sex", "birth_year", "department", "consent_scope", "consent_date",
                    "withdrawn_date"])
        existing = {p.hospital_number_hash: p for p in Patient.objects.filter(
            site=self.site, hospital_number_hash__in=list(hashes.values()))}
        return {n: existing[h] for n, h in hashes.items() if h in existing}

    def _apply(self, obj, values: dict, table: str, line: int) -> bool:
        differs = {k: v for k, v in values.items() if getattr(obj, k) != v}
        if not differs:
            return False
        if obj.status == RecordStatus.LOCKED:
            self.problems.append(Problem(f"{table}.csv", line, ", ".join(differs), "",
                                         "this record is locked; a monitor must unlock it "
                                         "before an import can change it"))
            return False
        for k, v in differs.items():
            setattr(obj, k, v)
        obj.version += 1
        obj.import_batch = self.batch
        if obj.status == RecordStatus.VERIFIED:
            obj.status = RecordStatus.SUBMITTED
        return True

    def _save(self, model, table, new, changed, fields, *, rows: bool = False) -> None:
        if new and rows:
            copy_insert_audited(model, new, acting_user=self.user, reason=self.reason)
        elif new:
            copy_create_audited(model, new, acting_user=self.user, reason=self.reason)
        if changed:
            bulk_update_audited(model, changed, [*fields, "version", "import_batch", "status"],
                                acting_user=self.user, reason=self.reason)
        self._count(table, "created", len(new))
        self._count(table, "updated", len(changed))

    def _upsert(self, model, key, incoming_key, existing_key, values_for, select=()) -> dict:
        if key not in self.files:
            return {}
        patient_ids = [p.pk for p in self.patients.values()]
        existing = {existing_key(m): m for m in model.objects.filter(
            patient_id__in=patient_ids).select_related(*select)}
        new, changed, fields = [], [], set()
        columns = _attnames(model)
        base = {"site_id": self.site.pk, "status": RecordStatus.SUBMITTED,
                "import_batch_id": self.batch.pk}
        for line, row, raw in self._rows(key):
            context = {"patient": self.patients[raw["patient_no"]], "raw": raw}
            values = values_for(row, context, line)
            if values is None:
                continue
            natural = incoming_key(row, context)
            obj = existing.get(natural)
            fields |= set(values)
            if obj is None:
                # A new row goes to COPY as column values: no model instance is built.
                new_row = dict(base, patient_id=context["patient"].pk)
                for name, value in values.items():
                    attname, related = columns[name]
                    new_row[attname] = value.pk if related and value is not None else value
                existing[natural] = _WRITTEN
                new.append(new_row)
                if len(new) >= CHUNK_ROWS:  # written as we go: memory stays bounded
                    self._save(model, key, new, [], [], rows=True)
                    new = []
            elif obj is _WRITTEN:  # the file's checks refuse duplicate keys before this
                raise RuntimeError(f"{key}.csv line {line}: natural key seen twice")
            elif self._apply(obj, values, key, line):
                changed.append(obj)
            else:
                self._count(key, "unchanged")
        self._save(model, key, new, changed, sorted(fields), rows=True)
        return existing

    # -- per table ----------------------------------------------------------------------------

    def _line_values(self, r, c, line):
        raw = c["raw"]
        return {"line_no": r["line_no"], "regimen_term": self._term("regimen", raw.get("regimen")),
                "regimen": self._concept("regimen", raw.get("regimen")),
                "intent": r.get("intent") or "", "start_date": r["start_date"],
                "end_date": r.get("end_date")}

    def _diagnosis_values(self, r, c, line):
        raw = c["raw"]
        return {"diagnosis_date": r["diagnosis_date"],
                "cancer_term": self._term("condition", raw["cancer"]),
                "cancer": self._concept("condition", raw["cancer"]),
                "morphology_term": self._term("morphology", raw.get("morphology")),
                "morphology": self._concept("morphology", raw.get("morphology")),
                "stage_system": raw.get("stage_system", ""),
                "stage_group": raw.get("stage_group", ""), "t": raw.get("t", ""),
                "n": raw.get("n", ""), "m": raw.get("m", ""), "ecog": r.get("ecog"),
                "biomarkers": parse_biomarkers(raw.get("biomarkers", ""))}

    def _cycle_values(self, r, c, line):
        bsa = r.get("bsa_m2")
        return {"line": self.all_lines[(c["patient"].pk, r["line_no"])],
                "cycle_no": r["cycle_no"], "start_date": r["start_date"],
                "length_days": r.get("length_days"),
                "bsa_m2": Decimal(f"{bsa:.2f}") if bsa is not None else None}

    def _cycle(self, c, r):
        if r.get("cycle_no") is None or r.get("line_no") is None:
            return None
        return self.cycles[(c["patient"].pk, r["line_no"], r["cycle_no"])]

    def _drug_values(self, r, c, line):
        raw = c["raw"]
        dose = r.get("dose")
        return {"cycle": self._cycle(c, r), "day": r.get("day") or 1,
                "drug_term": self._term("drug", raw["drug"]),
                "drug": self._concept("drug", raw["drug"]),
                "dose": Decimal(str(dose)).quantize(Decimal("0.001")) if dose is not None
                else None, "dose_unit": r.get("dose_unit") or "", "route": r.get("route") or "",
                "purpose": r.get("purpose") or "antineoplastic"}

    def _ae_values(self, r, c, line):
        raw = c["raw"]
        return {"ae_term": self._term("adverse_event", raw["term"]),
                "ae": self._concept("adverse_event", raw["term"]), "grade": r["grade"],
                "onset_date": r["onset_date"], "resolved_date": r.get("resolved_date"),
                "serious": bool(r.get("serious")), "cycle": self._cycle(c, r)}

    def _lab_values(self, r, c, line):
        raw = c["raw"]
        lab = self._concept("lab", raw["test"])
        unit_word = raw.get("unit", "")
        unit = self._concept("unit", unit_word)
        value = r["value_value"]
        canonical, canonical_unit, flag = lab_canonical(
            lab=lab, unit=unit, value=value, unit_given=bool(unit_word),
            convert=self._conversion)
        return {"test_term": self._term("lab", raw["test"]), "lab": lab,
                "collected_date": r["collected_date"], "value_text": raw["value"],
                "comparator": r["value_comparator"] or "", "value": value,
                "unit_term": self._term("unit", unit_word), "unit": unit,
                "value_canonical": canonical, "canonical_unit": canonical_unit,
                "unit_flag": flag, "cycle": self._cycle(c, r)}

    def _conversion(self, *, lab: Concept, unit: Concept, value: float):
        """convert_to_canonical, with each (lab, unit) factor looked up once per import."""
        key = (lab.pk, unit.pk)
        if key not in self.factors:
            self.factors[key] = convert_to_canonical(lab=lab, unit=unit, value=1.0)
        factor, canonical = self.factors[key]
        if factor is None:
            return None, None
        return round(value * factor, 9), canonical

    def _followup_values(self, r, c, line):
        return {"followup_date": r["followup_date"], "vital_status": r["vital_status"],
                "progression": r.get("progression"),
                "progression_date": r.get("progression_date"), "ecog": r.get("ecog"),
                "cause_of_death": c["raw"].get("cause_of_death", "")}



