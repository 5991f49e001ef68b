"""Writes of the clinical record. Each is one transaction, checks the acting user's role at the
row's site, validates everything before writing, and leaves an audit row with user and reason.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from decimal import Decimal, InvalidOperation
from types import SimpleNamespace

import pandas as pd
from django.contrib.auth.models import User
from django.db import models, transaction
from django.db.models import Exists, Max, Min, OuterRef, Subquery
from django.utils import timezone
from django.utils.translation import gettext

from registry import limits
from registry.audit import version_bump
from registry.errors import ErrorCollector, ValidationFailed
from registry.kinds import KINDS
from registry.models import (
    AdverseEvent,
    Cycle,
    Department,
    Diagnosis,
    Domain,
    DrugAdministration,
    FollowUp,
    LabResult,
    Patient,
    Site,
    TreatmentLine,
)
from registry.models.organisation import DATA_ENTRY_ROLES
from registry.pseudonyms import hospital_number_hash, hospital_number_hashes
from registry.rules import (
    FACTS,
    VIOLATION_COLUMNS,
    Severity,
    allowed_grades_text,
    evaluate,
    rules_reading_facts_of,
)
from registry.selectors.bulk import records_frame
from registry.services.mapping import term_resolve
from registry.services.organisation import require_site_role
from registry.services.terminology import lab_canonical, normalise_for_domain
from registry.services.workflow import edit_guard, queries_open_bulk, save_or_refuse, store

_LAB_VALUE = re.compile(r"^\s*(<=|>=|≤|≥|<|>)?\s*([-+]?\d+(?:\.\d+)?)\s*$")


def _today() -> dt.date:
    return timezone.localdate()


def _check_not_future(errors: ErrorCollector, field: str, value: dt.date | None) -> None:
    if value is not None and value > _today():
        errors.add(field, f"{value.isoformat()} is in the future.")


def _check_length(errors: ErrorCollector, field: str, value: str | None, limit: int) -> None:
    if value and len(value) > limit:
        errors.add(field, f"At most {limit} characters, not {len(value)}.")


def _check_term(errors: ErrorCollector, field: str, domain: str, text: str | None) -> None:
    """A local word fits its column as written and once normalised (NFKC can lengthen it)."""
    limit = limits.TERM_TEXT_MAX_LENGTH
    if text and (len(text) > limit or len(normalise_for_domain(domain, text)) > limit):
        errors.add(field, f"At most {limit} characters.")


def _check_decimal(errors: ErrorCollector, field: str, value: Decimal, *, max_digits: int,
                   decimal_places: int) -> bool:
    problem = limits.decimal_problem(value, max_digits=max_digits,
                                     decimal_places=decimal_places)
    if problem:
        errors.add(field, f"{value} {problem}.")
    return problem is None


def _patient_facts(patient: Patient, *, editing: models.Model | None = None) -> dict:
    """The patient's stored facts the rulebook reads (its ``ctx_`` columns), leaving out the
    record being edited: birth year, death, first diagnosis, last diagnosis or cycle."""

    def others(model):
        rows = model.objects.filter(patient=patient)
        if isinstance(editing, model):
            rows = rows.exclude(pk=editing.pk)
        return rows

    death = others(FollowUp).filter(vital_status=FollowUp.VitalStatus.DEAD).aggregate(
        d=Min("followup_date"))["d"]
    diagnoses = others(Diagnosis).aggregate(first=Min("diagnosis_date"),
                                            last=Max("diagnosis_date"))
    last_cycle = others(Cycle).aggregate(d=Max("start_date"))["d"]
    events = [d for d in (diagnoses["last"], last_cycle) if d is not None]
    return {"ctx_birth_year": patient.birth_year, "ctx_death_date": death,
            "ctx_first_diagnosis_date": diagnoses["first"],
            "ctx_last_event_date": max(events, default=None)}


def _rules_check(errors: ErrorCollector, kind: str, row: dict) -> list[tuple[str, str]]:
    """Run the rulebook over one record (a frame of one row): each hard rule broken is an
    error at its field; the soft ones are returned as (field, message) for `store` to open
    queries on. Rules whose columns the row lacks are left to a later call."""
    violations, _ = evaluate(kind, pd.DataFrame([row]))
    warnings = []
    for field, severity, message in zip(violations["field"], violations["severity"],
                                        violations["message"], strict=True):
        if severity == Severity.HARD:
            errors.add(field, message)
        else:
            warnings.append((field, message))
    return warnings


def _fact_stored(instance: models.Model | None) -> object:
    """The fact a stored record gives its patient's other records' rules (None: new)."""
    if instance is None:
        return None
    return FACTS[instance._meta.model_name](type(instance).objects.get(pk=instance.pk))


def _dependant_violations(kind: str, patient: Patient) -> pd.DataFrame:
    """The broken rules of `patient`'s stored records that read a fact of `kind`'s records,
    one read per record kind through the bulk reader (inside the write's transaction)."""
    by_kind: dict[str, list] = {}
    for rule in rules_reading_facts_of(kind):
        by_kind.setdefault(rule.kind, []).append(rule)
    found = []
    for child_kind, child_rules in by_kind.items():
        columns = sorted({c for rule in child_rules for c in rule.columns})
        frame = records_frame(child_kind, sites=[patient.site_id], patients=[patient.pk],
                              columns=columns).set_index("id")
        violations, _skipped = evaluate(child_kind, frame,
                                        codes=[rule.code for rule in child_rules])
        if not violations.empty:
            found.append(violations.assign(kind=child_kind))
    return (pd.concat(found, ignore_index=True) if found
            else pd.DataFrame(columns=[*VIOLATION_COLUMNS, "kind"]))


@contextmanager
def _dependants_rechecked(model: type[models.Model], instance: models.Model | None,
                          fields: dict, *, patient: Patient, field: str,
                          acting_user: User | None) -> Iterator[None]:
    """Around the write of `fields` to a record of `model` (`instance`, or a new one): when
    the fact it gives its patient's other records changes (rules.FACTS: birth year, diagnosis,
    line or cycle start, death), run again the rules of those records that read it, over the
    stored records as they stand after the write. A rule a record breaks after the write and
    did not break before it: hard, the write is refused (its transaction rolls back) with the
    rule's message at `field`, naming the record; soft, a data query is opened on the record,
    in one insert as an import does."""
    kind = model._meta.model_name
    if FACTS[kind](SimpleNamespace(**fields)) == _fact_stored(instance):
        yield
        return
    key = ["kind", "row", "code"]
    before = _dependant_violations(kind, patient)
    yield
    after = _dependant_violations(kind, patient)
    new = after[~after.set_index(key).index.isin(before.set_index(key).index)]
    errors = ErrorCollector()
    for row in new[new["severity"] == Severity.HARD].itertuples():
        errors.add(field, gettext("%(record)s: %(message)s") % {
            "record": _record_label(row.kind, row.row), "message": row.message})
    errors.raise_if_any()
    soft = new[new["severity"] == Severity.SOFT]
    for child_kind, rows in soft.groupby("kind"):
        queries_open_bulk(pd.DataFrame({
            "site_id": patient.site_id, "patient_id": patient.pk,
            "record_id": rows["row"].astype(int).to_numpy(), "field": rows["field"].to_numpy(),
            "text": rows["message"].to_numpy()}), record_model=child_kind,
            acting_user=acting_user, reason="edit check")


def _record_label(kind: str, pk: int) -> str:
    """A record as a message names it: its kind's label from the catalogue and its id
    ("Cycle 12", "周期 12")."""
    return gettext("%(kind)s %(id)s") % {"kind": KINDS[kind].label, "id": pk}


def _check_demographics(errors: ErrorCollector, *, site: Site, sex: str, birth_year: int,
                        consent_scope: str, department: Department | None,
                        consent_date: dt.date | None) -> None:
    if sex not in Patient.Sex.values:
        errors.add("sex", f"Sex must be M or F, not {sex!r}.")
    if not isinstance(birth_year, int) or not limits.BIRTH_YEAR_MIN <= birth_year <= _today().year:
        errors.add("birth_year", f"Birth year {birth_year!r} is not between "
                   f"{limits.BIRTH_YEAR_MIN} and this year.")
    if consent_scope not in Patient.ConsentScope.values:
        errors.add("consent_scope", f"Unknown consent scope {consent_scope!r}.")
    if department is not None and department.site_id != site.id:
        errors.add("department", f"Department {department.name} is not at site {site.code}.")
    _check_not_future(errors, "consent_date", consent_date)


def patient_register(
    *,
    site: Site,
    patient_no: str,
    sex: str,
    birth_year: int,
    department: Department | None = None,
    consent_scope: str = Patient.ConsentScope.ACADEMIC,
    consent_date: dt.date | None = None,
    acting_user: User,
    reason: str = "patient registered",
) -> Patient:
    """Enrol a patient at `site`. The hospital number is stored only as a keyed hash, and the
    same number twice at one site is refused."""
    require_site_role(acting_user, site, DATA_ENTRY_ROLES)
    errors = ErrorCollector()
    if not (patient_no or "").strip():
        errors.add("patient_no", "The hospital patient number is required.")
    _check_length(errors, "patient_no", patient_no, limits.HOSPITAL_NUMBER_MAX_LENGTH)
    _check_demographics(errors, site=site, sex=sex, birth_year=birth_year,
                        consent_scope=consent_scope, department=department,
                        consent_date=consent_date)
    errors.raise_if_any()
    number_hash = hospital_number_hash(site.code, patient_no)
    if Patient.objects.filter(site=site, hospital_number_hash__in=hospital_number_hashes(
            site.code, patient_no)).exists():
        raise ValidationFailed(
            f"A patient with this hospital number is already registered at {site.code}.",
            field="patient_no",
        )
    with transaction.atomic():
        return save_or_refuse(
            Patient(
                site=site,
                department=department,
                hospital_number_hash=number_hash,
                sex=sex,
                birth_year=birth_year,
                consent_scope=consent_scope,
                consent_date=consent_date,
            ),
            acting_user=acting_user,
            reason=reason,
        )


@transaction.atomic
def patient_update(
    *,
    patient: Patient,
    sex: str,
    birth_year: int,
    department: Department | None = None,
    consent_scope: str = Patient.ConsentScope.ACADEMIC,
    consent_date: dt.date | None = None,
    expected_version: int | None,
    change_reason: str = "",
    acting_user: User,
) -> Patient:
    """Correct a patient's demographics and consent (the hospital number is not editable)."""
    require_site_role(acting_user, patient.site, DATA_ENTRY_ROLES)
    reason = edit_guard(
        patient,
        acting_user=acting_user,
        expected_version=expected_version,
        change_reason=change_reason,
    )
    errors = ErrorCollector()
    _check_demographics(errors, site=patient.site, sex=sex, birth_year=birth_year,
                        consent_scope=consent_scope, department=department,
                        consent_date=consent_date)
    errors.raise_if_any()
    fields = {
        "sex": sex,
        "birth_year": birth_year,
        "department": department,
        "consent_scope": consent_scope,
        "consent_date": consent_date,
    }
    with _dependants_rechecked(Patient, patient, fields, patient=patient, field="birth_year",
                               acting_user=acting_user):
        updated = store(Patient, patient, fields, acting_user=acting_user, reason=reason)
    return updated


def patient_withdraw(
    *, patient: Patient, withdrawn_date: dt.date, acting_user: User, reason: str
) -> Patient:
    """Record the patient's withdrawal of consent; releases built after it leave them out."""
    require_site_role(acting_user, patient.site, DATA_ENTRY_ROLES)
    errors = ErrorCollector()
    _check_not_future(errors, "withdrawn_date", withdrawn_date)
    errors.raise_if_any()
    with transaction.atomic():
        patient = Patient.objects.select_for_update().get(pk=patient.pk)
        patient.withdrawn_date = withdrawn_date
        version_bump(patient)
        return save_or_refuse(patient, acting_user=acting_user, reason=reason)


@transaction.atomic
def diagnosis_record(
    *,
    patient: Patient,
    diagnosis_date: dt.date,
    cancer: str,
    morphology: str = "",
    stage_system: str = "",
    stage_group: str = "",
    t: str = "",
    n: str = "",
    m: str = "",
    ecog: int | None = None,
    biomarkers: dict | None = None,
    instance: Diagnosis | None = None,
    expected_version: int | None = None,
    change_reason: str = "",
    acting_user: User,
    reason: str = "diagnosis recorded",
) -> Diagnosis:
    require_site_role(acting_user, patient.site, DATA_ENTRY_ROLES)
    if instance is not None:
        reason = edit_guard(
            instance,
            acting_user=acting_user,
            expected_version=expected_version,
            change_reason=change_reason,
        )
    errors = ErrorCollector()
    if not (cancer or "").strip():
        errors.add("cancer", "The cancer (local word or ICD-10 code) is required.")
    _check_term(errors, "cancer", Domain.CONDITION, cancer)
    _check_term(errors, "morphology", Domain.MORPHOLOGY, morphology)
    for name, value, limit in (("stage_system", stage_system, limits.STAGE_MAX_LENGTH),
                               ("stage_group", stage_group, limits.STAGE_MAX_LENGTH),
                               ("t", t, limits.TNM_MAX_LENGTH), ("n", n, limits.TNM_MAX_LENGTH),
                               ("m", m, limits.TNM_MAX_LENGTH)):
        _check_length(errors, name, value, limit)
    _check_not_future(errors, "diagnosis_date", diagnosis_date)
    warnings = _rules_check(errors, "diagnosis", {
        "diagnosis_date": diagnosis_date, **_patient_facts(patient, editing=instance)})
    if ecog is not None and not limits.ECOG_MIN <= ecog <= limits.ECOG_MAX:
        errors.add("ecog", f"ECOG must be 0-4, not {ecog}.")
    errors.raise_if_any()
    with transaction.atomic():
        site = patient.site
        cancer_term, cancer_concept = term_resolve(
            site=site, domain=Domain.CONDITION, text=cancer, acting_user=acting_user
        )
        morphology_term = morphology_concept = None
        if (morphology or "").strip():
            morphology_term, morphology_concept = term_resolve(
                site=site, domain=Domain.MORPHOLOGY, text=morphology, acting_user=acting_user
            )
        fields = dict(
            site=site,
            patient=patient,
            diagnosis_date=diagnosis_date,
            cancer_term=cancer_term,
            cancer=cancer_concept,
            morphology_term=morphology_term,
            morphology=morphology_concept,
            stage_system=stage_system,
            stage_group=stage_group,
            t=t,
            n=n,
            m=m,
            ecog=ecog,
            biomarkers=biomarkers or {},
        )
        with _dependants_rechecked(Diagnosis, instance, fields, patient=patient,
                                   field="diagnosis_date", acting_user=acting_user):
            record = store(Diagnosis, instance, fields, acting_user=acting_user, reason=reason,
                           warnings=warnings)
        return record


@transaction.atomic
def treatment_line_record(
    *,
    patient: Patient,
    line_no: int,
    start_date: dt.date,
    regimen: str = "",
    intent: str = "",
    end_date: dt.date | None = None,
    instance: TreatmentLine | None = None,
    expected_version: int | None = None,
    change_reason: str = "",
    acting_user: User,
    reason: str = "treatment line recorded",
) -> TreatmentLine:
    require_site_role(acting_user, patient.site, DATA_ENTRY_ROLES)
    if instance is not None:
        reason = edit_guard(
            instance,
            acting_user=acting_user,
            expected_version=expected_version,
            change_reason=change_reason,
        )
    errors = ErrorCollector()
    if line_no < 1:
        errors.add("line_no", "Line numbers start at 1.")
    if intent and intent not in TreatmentLine.Intent.values:
        errors.add("intent", f"Unknown intent {intent!r}.")
    _check_term(errors, "regimen", Domain.REGIMEN, regimen)
    _check_not_future(errors, "start_date", start_date)
    _check_not_future(errors, "end_date", end_date)
    facts = _patient_facts(patient, editing=instance)
    _check_diagnosed(errors, facts, "start_date")
    warnings = _rules_check(errors, "treatmentline", {
        "start_date": start_date, "end_date": end_date, **facts})
    if (
        TreatmentLine.objects.filter(patient=patient, line_no=line_no)
        .exclude(pk=getattr(instance, "pk", None))
        .exists()
    ):
        errors.add("line_no", f"Line {line_no} is already recorded for this patient.")
    errors.raise_if_any()
    with transaction.atomic():
        regimen_term = regimen_concept = None
        if (regimen or "").strip():
            regimen_term, regimen_concept = term_resolve(
                site=patient.site, domain=Domain.REGIMEN, text=regimen, acting_user=acting_user
            )
        fields = dict(
            site=patient.site,
            patient=patient,
            line_no=line_no,
            regimen_term=regimen_term,
            regimen=regimen_concept,
            intent=intent,
            start_date=start_date,
            end_date=end_date,
        )
        with _dependants_rechecked(TreatmentLine, instance, fields, patient=patient,
                                   field="start_date", acting_user=acting_user):
            record = store(TreatmentLine, instance, fields, acting_user=acting_user,
                           reason=reason, warnings=warnings)
        return record


def _check_diagnosed(errors: ErrorCollector, facts: dict, field: str) -> None:
    """A form records treatment only after a diagnosis (the rulebook checks the dates)."""
    if facts["ctx_first_diagnosis_date"] is None:
        errors.add(field, "Record the diagnosis before the treatment.")


@transaction.atomic
def cycle_record(
    *,
    line: TreatmentLine,
    cycle_no: int,
    start_date: dt.date,
    length_days: int | None = None,
    bsa_m2: Decimal | None = None,
    instance: Cycle | None = None,
    expected_version: int | None = None,
    change_reason: str = "",
    acting_user: User,
    reason: str = "cycle recorded",
) -> Cycle:
    patient = line.patient
    require_site_role(acting_user, patient.site, DATA_ENTRY_ROLES)
    if instance is not None:
        reason = edit_guard(
            instance,
            acting_user=acting_user,
            expected_version=expected_version,
            change_reason=change_reason,
        )
    errors = ErrorCollector()
    if cycle_no < 1:
        errors.add("cycle_no", "Cycle numbers start at 1.")
    _check_not_future(errors, "start_date", start_date)
    facts = _patient_facts(patient)
    _check_diagnosed(errors, facts, "start_date")
    bsa = None
    if bsa_m2 is not None:
        bsa = Decimal(str(bsa_m2))
        if not _check_decimal(errors, "bsa_m2", bsa, max_digits=limits.BSA_MAX_DIGITS,
                              decimal_places=limits.BSA_DECIMAL_PLACES):
            bsa = None
    warnings = _rules_check(errors, "cycle", {
        "start_date": start_date, "bsa_m2": bsa, "ctx_line_start_date": line.start_date,
        **facts})
    if (
        Cycle.objects.filter(line=line, cycle_no=cycle_no)
        .exclude(pk=getattr(instance, "pk", None))
        .exists()
    ):
        errors.add("cycle_no", f"Cycle {cycle_no} of line {line.line_no} is already recorded.")
    errors.raise_if_any()
    fields = dict(
        site=patient.site,
        patient=patient,
        line=line,
        cycle_no=cycle_no,
        start_date=start_date,
        length_days=length_days,
        bsa_m2=bsa_m2,
    )
    with _dependants_rechecked(Cycle, instance, fields, patient=patient, field="start_date",
                               acting_user=acting_user):
        record = store(Cycle, instance, fields, acting_user=acting_user, reason=reason,
                       warnings=warnings)
    return record


@transaction.atomic
def drug_administration_record(
    *,
    cycle: Cycle,
    drug: str,
    day: int = 1,
    dose: Decimal | str | None = None,
    dose_unit: str = "",
    route: str = "",
    purpose: str = DrugAdministration.Purpose.ANTINEOPLASTIC,
    instance: DrugAdministration | None = None,
    expected_version: int | None = None,
    change_reason: str = "",
    acting_user: User,
    reason: str = "drug administration recorded",
) -> DrugAdministration:
    patient = cycle.patient
    require_site_role(acting_user, patient.site, DATA_ENTRY_ROLES)
    if instance is not None:
        reason = edit_guard(
            instance,
            acting_user=acting_user,
            expected_version=expected_version,
            change_reason=change_reason,
        )
    errors = ErrorCollector()
    if not (drug or "").strip():
        errors.add("drug", "The drug is required.")
    _check_term(errors, "drug", Domain.DRUG, drug)
    if day < 1:
        errors.add("day", "Days of a cycle start at 1.")
    parsed_dose = checked_dose = None
    if dose not in (None, ""):
        try:
            parsed_dose = Decimal(str(dose))
        except InvalidOperation:
            errors.add("dose", f"The dose {dose!r} is not a number.")
        else:
            if _check_decimal(errors, "dose", parsed_dose, max_digits=limits.DOSE_MAX_DIGITS,
                              decimal_places=limits.DOSE_DECIMAL_PLACES):
                checked_dose = parsed_dose  # a finite number the rules can compare
                if parsed_dose <= 0:
                    errors.add("dose", f"The dose must be positive, not {dose}.")
        if not dose_unit:
            errors.add("dose_unit", "A dose needs its unit.")
    if dose_unit and dose_unit not in DrugAdministration.DoseUnit.values:
        errors.add(
            "dose_unit",
            f"Unknown dose unit {dose_unit!r}; use one of "
            f"{', '.join(DrugAdministration.DoseUnit.values)}.",
        )
    if route and route not in DrugAdministration.Route.values:
        errors.add("route", f"Unknown route {route!r}.")
    if purpose not in DrugAdministration.Purpose.values:
        errors.add("purpose", f"Unknown purpose {purpose!r}.")
    warnings = _rules_check(errors, "drugadministration",
                            {"dose": checked_dose, "dose_unit": dose_unit})
    errors.raise_if_any()
    with transaction.atomic():
        drug_term, drug_concept = term_resolve(
            site=patient.site, domain=Domain.DRUG, text=drug, acting_user=acting_user
        )
        if (
            DrugAdministration.objects.filter(cycle=cycle, day=day, drug_term=drug_term)
            .exclude(pk=getattr(instance, "pk", None))
            .exists()
        ):
            raise ValidationFailed(
                f"{drug} on day {day} of this cycle is already recorded.", field="drug"
            )
        return store(
            DrugAdministration,
            instance,
            dict(
                site=patient.site,
                patient=patient,
                cycle=cycle,
                day=day,
                drug_term=drug_term,
                drug=drug_concept,
                dose=parsed_dose,
                dose_unit=dose_unit,
                route=route,
                purpose=purpose,
            ),
            acting_user=acting_user,
            reason=reason,
            warnings=warnings,
        )


@transaction.atomic
def adverse_event_record(
    *,
    patient: Patient,
    term: str,
    grade: int,
    onset_date: dt.date,
    resolved_date: dt.date | None = None,
    serious: bool = False,
    cycle: Cycle | None = None,
    ctcae_version: str = "5.0",
    instance: AdverseEvent | None = None,
    expected_version: int | None = None,
    change_reason: str = "",
    acting_user: User,
    reason: str = "adverse event recorded",
) -> AdverseEvent:
    """Record a CTCAE-graded adverse event. A grade the term does not define (Nausea grade 4,
    Febrile neutropenia grade 1) is refused once the term is mapped; 1-5 always."""
    require_site_role(acting_user, patient.site, DATA_ENTRY_ROLES)
    if instance is not None:
        reason = edit_guard(
            instance,
            acting_user=acting_user,
            expected_version=expected_version,
            change_reason=change_reason,
        )
    errors = ErrorCollector()
    if not (term or "").strip():
        errors.add("term", "The adverse event term is required.")
    _check_term(errors, "term", Domain.ADVERSE_EVENT, term)
    if not isinstance(grade, int) or not 1 <= grade <= 5:
        errors.add("grade", f"CTCAE grades are 1-5, not {grade!r}.")
    _check_not_future(errors, "onset_date", onset_date)
    _check_not_future(errors, "resolved_date", resolved_date)
    if cycle is not None and cycle.patient_id != patient.id:
        errors.add("cycle", "The linked cycle belongs to another patient.")
    warnings = _rules_check(errors, "adverseevent", {
        "onset_date": onset_date, "resolved_date": resolved_date, "grade": grade,
        "serious": serious, **_patient_facts(patient)})
    errors.raise_if_any()
    with transaction.atomic():
        ae_term, ae_concept = term_resolve(
            site=patient.site, domain=Domain.ADVERSE_EVENT, text=term, acting_user=acting_user
        )
        # The rules that need the term's meaning (its grades) run once it is resolved.
        warnings += _rules_check(errors, "adverseevent", {
            "grade": grade, "ctx_term": ae_concept.name_en if ae_concept is not None else term,
            "ctx_allowed_grades": allowed_grades_text(
                ae_concept.allowed_grades() if ae_concept is not None else ())})
        errors.raise_if_any()
        if (
            AdverseEvent.objects.filter(patient=patient, ae_term=ae_term, onset_date=onset_date)
            .exclude(pk=getattr(instance, "pk", None))
            .exists()
        ):
            raise ValidationFailed(
                f"{term} with onset {onset_date.isoformat()} is already recorded.", field="term"
            )
        return store(
            AdverseEvent,
            instance,
            dict(
                site=patient.site,
                patient=patient,
                ae_term=ae_term,
                ae=ae_concept,
                ctcae_version=ctcae_version,
                grade=grade,
                onset_date=onset_date,
                resolved_date=resolved_date,
                serious=serious,
                cycle=cycle,
            ),
            acting_user=acting_user,
            reason=reason,
            warnings=warnings,
        )


def lab_value_parse(text: str) -> tuple[str, float]:
    """'<0.5' -> ('<', 0.5). Censored values are data, kept as comparator and number."""
    match = _LAB_VALUE.match(text or "")
    if not match:
        raise ValidationFailed(
            f"The lab value {text!r} is not a number (like 1.2 or <0.5).", field="value"
        )
    comparator = {"≤": "<=", "≥": ">="}.get(match.group(1) or "", match.group(1) or "")
    return comparator, float(match.group(2))


@transaction.atomic
def lab_result_record(
    *,
    patient: Patient,
    test: str,
    collected_date: dt.date,
    value: str,
    unit: str = "",
    cycle: Cycle | None = None,
    instance: LabResult | None = None,
    expected_version: int | None = None,
    change_reason: str = "",
    acting_user: User,
    reason: str = "lab result recorded",
) -> LabResult:
    """Record a lab value as entered, and in the lab's canonical unit when the unit converts.

    A unit that is missing, not yet mapped or not convertible is flagged on the row; the
    canonical value then stays empty rather than being stored in the wrong unit.
    """
    require_site_role(acting_user, patient.site, DATA_ENTRY_ROLES)
    if instance is not None:
        reason = edit_guard(
            instance,
            acting_user=acting_user,
            expected_version=expected_version,
            change_reason=change_reason,
        )
    errors = ErrorCollector()
    if not (test or "").strip():
        errors.add("test", "The lab test is required.")
    _check_term(errors, "test", Domain.LAB, test)
    _check_term(errors, "unit", Domain.UNIT, unit)
    _check_length(errors, "value", value, limits.LAB_VALUE_MAX_LENGTH)
    comparator, number = "", None
    try:
        comparator, number = lab_value_parse(value)
    except ValidationFailed as exc:
        errors.add("value", exc.errors["value"][0])
    _check_not_future(errors, "collected_date", collected_date)
    if cycle is not None and cycle.patient_id != patient.id:
        errors.add("cycle", "The linked cycle belongs to another patient.")
    warnings = _rules_check(errors, "labresult", {
        "value": number, "collected_date": collected_date, **_patient_facts(patient)})
    errors.raise_if_any()
    with transaction.atomic():
        site = patient.site
        test_term, lab = term_resolve(
            site=site, domain=Domain.LAB, text=test, acting_user=acting_user
        )
        unit_term = unit_concept = None
        unit_given = bool((unit or "").strip())
        if unit_given:
            unit_term, unit_concept = term_resolve(
                site=site, domain=Domain.UNIT, text=unit, acting_user=acting_user
            )
        value_canonical, canonical_unit, flag = lab_canonical(
            lab=lab, unit=unit_concept, value=number, unit_given=unit_given
        )
        # The rules that need the lab's meaning (its reference range) run once it is resolved.
        reference = lab.attributes if lab is not None else {}
        warnings += _rules_check(errors, "labresult", {
            "value_canonical": value_canonical,
            "ctx_reference_low": reference.get("reference_low"),
            "ctx_reference_high": reference.get("reference_high")})
        errors.raise_if_any()
        if (
            LabResult.objects.filter(
                patient=patient, test_term=test_term, collected_date=collected_date
            )
            .exclude(pk=getattr(instance, "pk", None))
            .exists()
        ):
            raise ValidationFailed(
                f"{test} collected on {collected_date.isoformat()} is already recorded.",
                field="test",
            )
        return store(
            LabResult,
            instance,
            dict(
                site=site,
                patient=patient,
                test_term=test_term,
                lab=lab,
                collected_date=collected_date,
                value_text=value.strip(),
                comparator=comparator,
                value=number,
                unit_term=unit_term,
                unit=unit_concept,
                value_canonical=value_canonical,
                canonical_unit=canonical_unit,
                unit_flag=flag,
                cycle=cycle,
            ),
            acting_user=acting_user,
            reason=reason,
            warnings=warnings,
        )


@transaction.atomic
def followup_summary_refresh(patient_ids: Iterable[int] | None = None) -> int:
    """Recompute the patients' derived follow-up columns from their follow-ups: the last visit
    and whether follow-up has ended (dead or lost). Every writer of follow-ups calls this in the
    same transaction; None refreshes every patient."""
    visits = FollowUp.objects.filter(patient=OuterRef("pk"))
    patients = Patient.objects.all()
    if patient_ids is not None:
        patients = patients.filter(pk__in=list(patient_ids))
    return patients.update(
        last_followup_date=Subquery(
            visits.order_by("-followup_date").values("followup_date")[:1]),
        followup_closed=Exists(visits.filter(
            vital_status__in=[FollowUp.VitalStatus.DEAD, FollowUp.VitalStatus.LOST])),
    )


@transaction.atomic
def followup_record(
    *,
    patient: Patient,
    followup_date: dt.date,
    vital_status: str,
    progression: bool | None = None,
    progression_date: dt.date | None = None,
    ecog: int | None = None,
    cause_of_death: str = "",
    instance: FollowUp | None = None,
    expected_version: int | None = None,
    change_reason: str = "",
    acting_user: User,
    reason: str = "follow-up recorded",
) -> FollowUp:
    require_site_role(acting_user, patient.site, DATA_ENTRY_ROLES)
    if instance is not None:
        reason = edit_guard(
            instance,
            acting_user=acting_user,
            expected_version=expected_version,
            change_reason=change_reason,
        )
    errors = ErrorCollector()
    if vital_status not in FollowUp.VitalStatus.values:
        errors.add(
            "vital_status", f"Vital status must be alive, dead or lost, not {vital_status!r}."
        )
    _check_not_future(errors, "followup_date", followup_date)
    _check_not_future(errors, "progression_date", progression_date)
    _check_length(errors, "cause_of_death", cause_of_death, limits.CAUSE_OF_DEATH_MAX_LENGTH)
    if ecog is not None and not limits.ECOG_MIN <= ecog <= limits.ECOG_MAX:
        errors.add("ecog", f"ECOG must be 0-4, not {ecog}.")
    if cause_of_death and vital_status != FollowUp.VitalStatus.DEAD:
        errors.add("cause_of_death", "A cause of death needs the vital status 'dead'.")
    warnings = _rules_check(errors, "followup", {
        "followup_date": followup_date, "vital_status": vital_status,
        "progression": progression, "progression_date": progression_date,
        "cause_of_death": cause_of_death, **_patient_facts(patient, editing=instance)})
    if (
        FollowUp.objects.filter(patient=patient, followup_date=followup_date)
        .exclude(pk=getattr(instance, "pk", None))
        .exists()
    ):
        errors.add(
            "followup_date", f"A follow-up on {followup_date.isoformat()} is already recorded."
        )
    errors.raise_if_any()
    with transaction.atomic():
        fields = dict(
            site=patient.site,
            patient=patient,
            followup_date=followup_date,
            vital_status=vital_status,
            progression=progression,
            progression_date=progression_date,
            ecog=ecog,
            cause_of_death=cause_of_death,
        )
        with _dependants_rechecked(FollowUp, instance, fields, patient=patient,
                                   field="followup_date", acting_user=acting_user):
            followup = store(FollowUp, instance, fields, acting_user=acting_user,
                             reason=reason, warnings=warnings)
            followup_summary_refresh([patient.pk])
    return followup
