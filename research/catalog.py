"""The variable catalog: every variable a release can contain, generated from the registry's
catalogue of record kinds (registry.kinds) plus the curated labels below.

Each record kind becomes one release table (named after its extract file: patients,
diagnoses, regimens, cycles, drugs, adverse_events, labs, followups). Every model column
becomes a variable unless it is bookkeeping (status, version, timestamps, import batch), a
link (replaced by study pseudonyms and release-local references) or a site's local word
(provenance: concepts are released, the words hospitals typed are not). A test keeps every
column of every kind either in the catalog or in the lists of what is left out, so a column
added to a kind is a decision here, not an omission.

Classes: *direct* identifiers are listed so that a request for them is refused by name;
*quasi*-identifiers (sex, age, site, region, calendar year, free text) are released only when
the committee approves each by name, and the release's k-anonymity is computed over them;
*clinical* variables are released as approved. Dates are released as days from the patient's
first diagnosis.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from django.db import models
from django.utils import translation

from registry.kinds import KINDS, RecordKind

DIRECT, QUASI, CLINICAL = "direct", "quasi", "clinical"
CLASSES = (DIRECT, QUASI, CLINICAL)

# Columns of every kind that are bookkeeping, not data.
BOOKKEEPING = frozenset({"id", "site_id", "status", "version", "created_at", "updated_at",
                         "import_batch_id", "patient_id"})
# Columns left out of the catalog on purpose, by kind (with why).
LEFT_OUT: dict[str, dict[str, str]] = {
    "patient": {
        "birth_year": "released as the age at first diagnosis (patient.age_at_diagnosis)",
        "department_id": "released as patient.department",
        "consent_scope": "decides who is released; not a study variable",
        "consent_date": "administrative",
        "withdrawn_date": "withdrawn patients are never released",
        "last_followup_date": "derived; the follow-ups themselves are released",
        "followup_closed": "derived",
    },
    "labresult": {"value_text": "the value as typed; released parsed (value, comparator)"},
}

# Curated labels (English, Chinese) and units; a test keeps one for every variable.
LABELS: dict[str, tuple[str, str, str]] = {
    "patient.registry_id": ("Registry pseudonym", "登记号", ""),
    "patient.hospital_number_hash": ("Hospital patient number (keyed hash)", "医院病案号(加密)", ""),
    "patient.sex": ("Sex", "性别", ""),
    "patient.age_at_diagnosis": ("Age at first diagnosis (90+ grouped)", "首次诊断年龄(90岁及以上合并)",
                                 "years"),
    "patient.diagnosis_year": ("Calendar year of first diagnosis", "首次诊断年份", ""),
    "patient.site": ("Enrolling hospital (code)", "入组医院(代码)", ""),
    "patient.region": ("Province of the enrolling hospital", "入组医院所在省份", ""),
    "patient.site_tier": ("Tier of the enrolling hospital", "入组医院等级", ""),
    "patient.department": ("Enrolling department", "入组科室", ""),
    "diagnosis.diagnosis_date": ("Diagnosis date (days from first diagnosis)", "诊断日期(距首次诊断天数)",
                                 "days"),
    "diagnosis.cancer": ("Cancer site (ICD-10)", "肿瘤部位(ICD-10)", ""),
    "diagnosis.morphology": ("Morphology (ICD-O-3)", "病理形态(ICD-O-3)", ""),
    "diagnosis.stage_system": ("Staging system", "分期系统", ""),
    "diagnosis.stage_group": ("Stage group", "分期", ""),
    "diagnosis.t": ("T category", "T分期", ""),
    "diagnosis.n": ("N category", "N分期", ""),
    "diagnosis.m": ("M category", "M分期", ""),
    "diagnosis.ecog": ("ECOG performance status at diagnosis", "诊断时ECOG评分", ""),
    "diagnosis.biomarkers": ("Biomarkers", "生物标志物", ""),
    "treatmentline.line_no": ("Line of treatment", "治疗线数", ""),
    "treatmentline.regimen": ("Regimen", "化疗方案", ""),
    "treatmentline.intent": ("Intent", "治疗目的", ""),
    "treatmentline.start_date": ("Line start (days from first diagnosis)", "治疗线开始(距首次诊断天数)",
                                 "days"),
    "treatmentline.end_date": ("Line end (days from first diagnosis)", "治疗线结束(距首次诊断天数)",
                               "days"),
    "cycle.cycle_no": ("Cycle number", "周期序号", ""),
    "cycle.start_date": ("Cycle start (days from first diagnosis)", "周期开始(距首次诊断天数)", "days"),
    "cycle.length_days": ("Planned cycle length", "计划周期长度", "days"),
    "cycle.bsa_m2": ("Body surface area", "体表面积", "m2"),
    "drugadministration.day": ("Day of the cycle", "周期内第几天", ""),
    "drugadministration.drug": ("Drug (ATC)", "药物(ATC)", ""),
    "drugadministration.dose": ("Dose", "剂量", "see dose_unit"),
    "drugadministration.dose_unit": ("Dose unit", "剂量单位", ""),
    "drugadministration.route": ("Route", "给药途径", ""),
    "drugadministration.purpose": ("Purpose", "用药目的", ""),
    "adverseevent.ae": ("Adverse event (CTCAE v5 term)", "不良事件(CTCAE v5术语)", ""),
    "adverseevent.ctcae_version": ("CTCAE version", "CTCAE版本", ""),
    "adverseevent.grade": ("CTCAE grade", "CTCAE分级", ""),
    "adverseevent.onset_date": ("Onset (days from first diagnosis)", "发生(距首次诊断天数)", "days"),
    "adverseevent.resolved_date": ("Resolution (days from first diagnosis)", "缓解(距首次诊断天数)",
                                   "days"),
    "adverseevent.serious": ("Serious adverse event", "严重不良事件", ""),
    "labresult.lab": ("Lab test (LOINC)", "检验项目(LOINC)", ""),
    "labresult.collected_date": ("Collected (days from first diagnosis)", "采样(距首次诊断天数)",
                                 "days"),
    "labresult.comparator": ("Comparator", "比较符", ""),
    "labresult.value": ("Value in the unit as entered", "检验值(原单位)", "see unit"),
    "labresult.unit": ("Unit as entered (UCUM)", "原单位(UCUM)", ""),
    "labresult.value_canonical": ("Value in the canonical unit", "检验值(标准单位)",
                                  "see canonical_unit"),
    "labresult.canonical_unit": ("Canonical unit (UCUM)", "标准单位(UCUM)", ""),
    "labresult.unit_flag": ("Unit check", "单位核对", ""),
    "followup.followup_date": ("Follow-up (days from first diagnosis)", "随访(距首次诊断天数)", "days"),
    "followup.vital_status": ("Vital status", "生存状态", ""),
    "followup.progression": ("Progression", "疾病进展", ""),
    "followup.progression_date": ("Progression (days from first diagnosis)", "进展(距首次诊断天数)",
                                  "days"),
    "followup.ecog": ("ECOG performance status", "ECOG评分", ""),
    "followup.cause_of_death": ("Cause of death (free text)", "死亡原因(自由文本)", ""),
}

# Classes other than clinical, by variable name.
CLASS_OF: dict[str, str] = {
    "patient.registry_id": DIRECT,
    "patient.hospital_number_hash": DIRECT,
    "patient.sex": QUASI,
    "patient.age_at_diagnosis": QUASI,
    "patient.diagnosis_year": QUASI,
    "patient.site": QUASI,
    "patient.region": QUASI,
    "patient.site_tier": QUASI,
    "patient.department": QUASI,
    # Free text can name a person, a place or a date.
    "followup.cause_of_death": QUASI,
}

# Patient variables that are not model columns: name -> (type, how it is derived).
DERIVED_PATIENT = {
    "age_at_diagnosis": ("string", "calendar year of first diagnosis minus birth year; 90 and "
                                   "over as \"90+\""),
    "diagnosis_year": ("int", "calendar year of the first diagnosis"),
    "site": ("category", "the enrolling hospital's code"),
    "region": ("category", "the enrolling hospital's province"),
    "site_tier": ("category", "the enrolling hospital's tier"),
    "department": ("category", "the enrolling department's name"),
}

STRUCTURE_NOTE = (
    "Every table has study_id, the patient's pseudonym for this release only (keyed HMAC; two "
    "releases cannot be joined on it). Treatment lines and cycles have a release-local "
    "reference (line_ref, cycle_ref) that child rows point to."
)


@dataclass(frozen=True)
class Variable:
    name: str  # "diagnosis.stage_group": the record kind and the column
    kind: str
    table: str  # the release table (the kind's extract file name)
    column: str  # its column in the release table
    source: str  # the column of the bulk reader's frame it is made from ("" when derived)
    type: str  # string, int, float, bool, date_days, category
    klass: str
    unit: str
    transformation: str
    concept: bool = False  # a concept id, released as the concept's code
    choices: tuple[tuple[str, str], ...] = ()  # model choices: (code, English label)

    @property
    def label_en(self) -> str:
        return LABELS[self.name][0]

    @property
    def label_zh(self) -> str:
        return LABELS[self.name][1]

    def label(self) -> str:
        """The label in the active language."""
        return self.label_zh if translation.get_language() in ZH_LANGUAGES else self.label_en

    def value_labels(self) -> dict[str, tuple[str, str]]:
        """Each stored code with its English and Chinese label."""
        return {code: (en, zh) for code, en, zh in _choice_labels(self.name)}

    def as_dict(self) -> dict:
        return {"name": self.name, "table": self.table, "column": self.column,
                "label_en": self.label_en, "label_zh": self.label_zh, "type": self.type,
                "unit": self.unit, "klass": self.klass, "transformation": self.transformation,
                "values": {code: f"{en} / {zh}" for code, (en, zh) in self.value_labels().items()}
                or None}


ZH_LANGUAGES = ("zh-hans", "zh", "zh-cn")


def _type_of(field: models.Field) -> str:
    if isinstance(field, models.DateField):
        return "date_days"
    if isinstance(field, models.BooleanField):
        return "bool"
    if isinstance(field, models.ForeignKey):
        return "string"
    if field.choices:
        return "category"
    if isinstance(field, models.FloatField | models.DecimalField):
        return "float"
    if isinstance(field, models.IntegerField):
        return "int"
    return "string"


def _links(kind: RecordKind) -> set[str]:
    """The columns pointing at another clinical record (released as references)."""
    models_ = {k.model for k in KINDS.values()}
    return {f.attname for f in kind.model._meta.concrete_fields
            if isinstance(f, models.ForeignKey) and f.related_model in models_}


def _words(kind: RecordKind) -> set[str]:
    return {w.term_column for w in kind.words}


@cache
def variables() -> tuple[Variable, ...]:
    """Every variable, in the order of the kinds and their columns."""
    found: list[Variable] = []
    for kind in KINDS.values():
        concepts = {f.attname for f in kind.model._meta.concrete_fields
                    if isinstance(f, models.ForeignKey)
                    and f.related_model._meta.model_name == "concept"}
        left_out = LEFT_OUT.get(kind.name, {})
        skip = BOOKKEEPING | _links(kind) | _words(kind) | set(left_out)
        for field in kind.model._meta.concrete_fields:
            if field.attname in skip:
                continue
            column = field.name if field.attname in concepts else field.attname
            name = f"{kind.name}.{column}"
            type_ = _type_of(field)
            if type_ == "date_days":
                transformation = "days from the patient's first diagnosis"
            elif field.attname in concepts:
                transformation = "the standard concept's code (see the vocabularies)"
            elif field.name == "biomarkers":
                transformation = "marker and result as text, e.g. \"EGFR+; ALK-\""
            else:
                transformation = ""
            found.append(Variable(
                name=name, kind=kind.name, table=kind.extract_file,
                column=f"{column}_day" if type_ == "date_days" else column,
                source=field.attname, type="string" if field.attname in concepts else type_,
                klass=CLASS_OF.get(name, CLINICAL), unit=LABELS[name][2] if name in LABELS
                else "", transformation=transformation, concept=field.attname in concepts,
                choices=tuple((str(c), str(label)) for c, label in (field.choices or ())),
            ))
        if kind.name == "patient":
            for column, (type_, how) in DERIVED_PATIENT.items():
                name = f"patient.{column}"
                found.append(Variable(
                    name=name, kind="patient", table=kind.extract_file, column=column,
                    source="", type=type_, klass=CLASS_OF.get(name, CLINICAL),
                    unit=LABELS[name][2], transformation=how))
    return tuple(found)


@cache
def by_name() -> dict[str, Variable]:
    return {v.name: v for v in variables()}


def _choice_labels(name: str) -> list[tuple[str, str, str]]:
    kind, _, column = name.partition(".")
    try:
        field = KINDS[kind].model._meta.get_field(column)
    except Exception:  # derived variables have no model field
        return []
    out = []
    for code, label in field.choices or ():
        with translation.override("en"):
            en = str(label)
        with translation.override("zh-hans"):
            zh = str(label)
        out.append((str(code), en, zh))
    return out


def requestable() -> tuple[Variable, ...]:
    """What a request may ask for: everything but direct identifiers."""
    return tuple(v for v in variables() if v.klass != DIRECT)


def tables() -> dict[str, str]:
    """Release table -> record kind, in the catalogue's order."""
    return {k.extract_file: k.name for k in KINDS.values()}
