"""What partner aggregates can be grouped and filtered by, and the values each dimension takes:
listed once. The analysis snapshot (snapshot.py) stores every dimension as a categorical column
over exactly these values, the aggregates' input is checked against them, and the dimensions
endpoint lists them, with labels, so a partner can write queries from the documentation alone.

Values are stored as text ("2021", "3"); the API shows the integer dimensions (diagnosis year,
cycle number) as integers. Every dimension a record can lack (a stage not recorded, a regimen
not yet mapped to a standard one) has the value "unknown", so cells add up to the population.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.utils import timezone, translation
from django.utils.translation import gettext_lazy as _

from registry.models import Concept, Patient, Site
from registry.models.terminology import Domain
from research import limits as L

UNKNOWN = "unknown"
# Contribution bounding: a patient counts in the regimens of their first lines only, and in
# the first cycles of each, so one patient moves at most MAX_LINES_COUNTED x MAX_CYCLES_COUNTED
# cells of a regimen-by-cycle table.
MAX_LINES_COUNTED = 3
MAX_CYCLES_COUNTED = 6
# Age at first diagnosis (diagnosis year minus birth year): (label, from, below).
AGE_BANDS: tuple[tuple[str, int, int], ...] = (
    ("<40", 0, 40), ("40-49", 40, 50), ("50-59", 50, 60), ("60-69", 60, 70),
    ("70-79", 70, 80), ("80+", 80, 200))
# Main stage groups: the AJCC group's Roman numeral (IIIA counts as III) or the BCLC stage.
STAGES = ("0", "I", "II", "III", "IV", "BCLC 0", "BCLC A", "BCLC B", "BCLC C", "BCLC D")
# The biomarkers the snapshot keeps (the keys a clerk writes, as registry.biomarkers stores
# them); feasibility criteria may name these only.
BIOMARKERS = ("EGFR", "ALK", "ROS1", "KRAS", "BRAF", "MSI-H", "HER2", "ER", "PR", "PD-L1")

# What an aggregate counts, and how many dimensions it may group by.
MEASURES = ("patients", "incidence")
MAX_BY = 2
# The count columns of an aggregate's table, and the rate of an incidence.
PATIENTS, WITH_EVENT, RATE = "patients", "patients_with_event", "incidence"

# Grouping levels: a patient, a (patient, regimen) pair, a (patient, regimen, cycle) triple.
PATIENT, REGIMEN, CYCLE = "patient", "regimen", "cycle"


@dataclass(frozen=True)
class Dimension:
    name: str
    label: object  # lazy translation
    level: str
    integer: bool = False
    has_unknown: bool = True


DIMENSIONS: dict[str, Dimension] = {d.name: d for d in (
    Dimension("cancer_site", _("Cancer site (ICD-10 category of the first diagnosis)"), PATIENT),
    Dimension("stage", _("Stage group of the first diagnosis"), PATIENT),
    Dimension("diagnosis_year", _("Year of the first diagnosis"), PATIENT, integer=True),
    Dimension("site_tier", _("Tier of the enrolling hospital"), PATIENT, has_unknown=False),
    Dimension("region", _("Province of the enrolling hospital"), PATIENT),
    Dimension("sex", _("Sex"), PATIENT, has_unknown=False),
    Dimension("age_band", _("Age at first diagnosis"), PATIENT),
    Dimension("regimen", _("Regimen of one of the first three treatment lines"), REGIMEN),
    Dimension("cycle_number", _("Cycle number (1 to 6) of that regimen"), CYCLE, integer=True,
              has_unknown=False),
)}
PATIENT_DIMENSIONS = tuple(n for n, d in DIMENSIONS.items() if d.level == PATIENT)


@dataclass(frozen=True)
class Value:
    code: str
    label_en: str
    label_zh: str


def both_labels(label) -> tuple[str, str]:
    with translation.override("en"):
        en = str(label)
    with translation.override("zh-hans"):
        zh = str(label)
    return en, zh


def _same(code: str) -> Value:
    return Value(code, code, code)


def first_year() -> int:
    return L.DIAGNOSIS_YEAR_MIN


def last_year(today: dt.date | None = None) -> int:
    return (today or timezone.localdate()).year


def dimension_values() -> dict[str, list[Value]]:
    """Every dimension's values with their English and Chinese labels, from the vocabulary (ICD-10
    categories, regimens), the sites (provinces) and the constants above. Two small queries,
    never the clinical tables: the list says what may be asked, not what the cohort holds."""
    conditions = {c["code"]: c for c in Concept.objects.filter(
        domain=Domain.CONDITION, vocabulary__code="ICD10").values("code", "name_en", "name_zh")}
    categories = sorted({code[:3] for code in conditions})
    regimens = Concept.objects.filter(domain=Domain.REGIMEN).order_by("code").values(
        "code", "name_en", "name_zh")
    provinces = sorted({p for p in Site.objects.values_list("province", flat=True) if p})
    unknown = Value(UNKNOWN, *both_labels(_("Unknown")))

    def label(code: str) -> Value:
        c = conditions.get(code)
        return Value(code, c["name_en"], c["name_zh"] or c["name_en"]) if c else _same(code)

    values: dict[str, list[Value]] = {
        "cancer_site": [label(code) for code in categories],
        "stage": [_same(s) for s in STAGES],
        "diagnosis_year": [_same(str(y)) for y in range(first_year(), last_year() + 1)],
        "site_tier": [Value(t.value, *both_labels(t.label)) for t in Site.Tier],
        "region": [_same(p) for p in provinces],
        "sex": [Value(s.value, *both_labels(s.label)) for s in Patient.Sex],
        "age_band": [_same(band) for band, _low, _high in AGE_BANDS],
        "regimen": [Value(r["code"], r["name_en"], r["name_zh"] or r["name_en"])
                    for r in regimens],
        "cycle_number": [_same(str(n)) for n in range(1, MAX_CYCLES_COUNTED + 1)],
    }
    for name, dimension in DIMENSIONS.items():
        if dimension.has_unknown:
            values[name].append(unknown)
    return values


def dimension_codes(values: dict[str, list[Value]]) -> dict[str, tuple[str, ...]]:
    return {name: tuple(v.code for v in vs) for name, vs in values.items()}


def shown(dimension: str, code: str) -> str | int:
    """A stored value as the API shows it (integers for the integer dimensions)."""
    return int(code) if DIMENSIONS[dimension].integer and code.isdigit() else code


def concept_codes(domain: str) -> set[str]:
    """The codes of the vocabulary's concepts of a domain (CTCAE terms, lab concepts)."""
    return set(Concept.objects.filter(domain=domain).values_list("code", flat=True))


def _values_output(name: str, values: list[Value]) -> list[dict]:
    return [{"code": shown(name, v.code), "label_en": v.label_en, "label_zh": v.label_zh}
            for v in values]


def dimensions_listed() -> dict:
    """What a partner may ask: dimensions and their values, measures, terms, labs."""
    values = dimension_values()
    measures = [
        ("patients", _("Patients"), [PATIENTS], []),
        ("incidence", _("Incidence of an adverse event"), [PATIENTS, WITH_EVENT], [RATE]),
    ]
    concepts = Concept.objects.filter(domain__in=[Domain.ADVERSE_EVENT, Domain.LAB]).order_by(
        "code")
    terms, labs = [], []
    for c in concepts:
        zh = c.name_zh or c.name_en
        if c.domain == Domain.ADVERSE_EVENT:
            terms.append({"code": c.code, "label_en": c.name_en, "label_zh": zh,
                          "grades": sorted(c.allowed_grades())})
        else:
            labs.append({"code": c.code, "label_en": c.name_en, "label_zh": zh,
                         "unit": str((c.attributes or {}).get("canonical_unit", ""))})
    return {
        "dimensions": [{"name": name, "label_en": both_labels(d.label)[0],
                        "label_zh": both_labels(d.label)[1], "level": d.level,
                        "values": _values_output(name, values[name])}
                       for name, d in DIMENSIONS.items()],
        "measures": [{"name": name, "label_en": both_labels(label)[0],
                      "label_zh": both_labels(label)[1],
                      "count_columns": counts, "rates": rates}
                     for name, label, counts, rates in measures],
        "max_by": MAX_BY, "max_lines_counted": MAX_LINES_COUNTED,
        "max_cycles_counted": MAX_CYCLES_COUNTED,
        "terms": terms, "biomarkers": list(BIOMARKERS), "labs": labs,
    }
