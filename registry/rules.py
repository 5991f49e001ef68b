"""The rulebook: every check of a clinical record, written once over frames.

A rule has a stable code, a severity (hard: the write is refused; soft: the write is accepted
and a data query opened), the record kind it checks, the field it names, the frame columns it
reads and a bilingual message. Its check takes a frame of records of its kind (one row for a
form, a whole file for an import, the stored cohort for the data-quality dashboard) and returns
a boolean Series, True where a row breaks the rule.

The three paths share the rule by building the same columns: the column names are the model's
field names, plus context columns whose names start with ``ctx_`` (e.g. ``ctx_birth_year``,
``ctx_first_diagnosis_date``, ``ctx_death_date``) that the caller looks up for the row. A path
that cannot supply a rule's columns does not run it; `evaluate` says which were skipped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

import numpy as np
import pandas as pd
from django.utils.translation import gettext_lazy as _


class Severity(StrEnum):
    HARD = "hard"  # refused
    SOFT = "soft"  # accepted, a data query opened


@dataclass(frozen=True)
class Rule:
    code: str
    kind: str  # a record kind's name, as in the kinds catalogue ("labresult", "cycle", ...)
    field: str  # the field the message is shown at (and a data query opened on)
    severity: Severity
    message: object  # lazy gettext; may hold %(name)s placeholders filled from the row
    columns: tuple[str, ...]
    check: Callable[[pd.DataFrame], pd.Series]
    # A row (of `columns`) that breaks the rule and one that keeps it: the rule's own test.
    fails: dict | None = None
    passes: dict | None = None

    def failing(self, frame: pd.DataFrame) -> pd.Series:
        """True where a row of `frame` breaks the rule (rows with missing inputs pass)."""
        result = self.check(frame[list(self.columns)])
        return result.fillna(False).astype(bool)


RULES: dict[str, Rule] = {}


def rule(*, code: str, kind: str, field: str, severity: Severity, message,
         columns: Iterable[str], fails: dict | None = None, passes: dict | None = None,
         ) -> Callable[[Callable[[pd.DataFrame], pd.Series]], Rule]:
    """Register the decorated check as a rule; a code is registered once."""

    def register(check: Callable[[pd.DataFrame], pd.Series]) -> Rule:
        if code in RULES:
            raise ValueError(f"Rule {code} is defined twice.")
        RULES[code] = Rule(code=code, kind=kind, field=field, severity=Severity(severity),
                           message=message, columns=tuple(columns), check=check,
                           fails=fails, passes=passes)
        return RULES[code]

    return register


def rules_for(kind: str) -> list[Rule]:
    return [r for r in RULES.values() if r.kind == kind]


VIOLATION_COLUMNS = ["row", "code", "severity", "field", "message"]


def evaluate(kind: str, frame: pd.DataFrame, *, severities: Iterable[Severity] | None = None,
             codes: Iterable[str] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Every rule of `kind` over `frame` (only those of `codes`, when given).

    Returns the violations (one row per failing row and rule: the frame's index label as
    ``row``, the rule's code, severity, field and message) and the codes of the rules skipped
    because the frame lacks their columns.
    """
    wanted = set(severities) if severities is not None else set(Severity)
    chosen = set(codes) if codes is not None else None
    found, skipped = [], []
    for r in rules_for(kind):
        if r.severity not in wanted or (chosen is not None and r.code not in chosen):
            continue
        if not set(r.columns) <= set(frame.columns):
            skipped.append(r.code)
            continue
        bad = frame.index[r.failing(frame).to_numpy()]
        if len(bad):
            found.append(pd.DataFrame({
                "row": bad, "code": r.code, "severity": r.severity.value, "field": r.field,
                "message": [_format(r.message, frame.loc[i]) for i in bad]}))
    violations = (pd.concat(found, ignore_index=True) if found
                  else pd.DataFrame(columns=VIOLATION_COLUMNS))
    return violations, skipped


# -- facts of one record that rules of other records read -------------------------------------
# A patient's context columns and the record kinds they are taken from. When a write changes
# such a fact (FACTS), the rules reading it are run again over the patient's stored records:
# moving a line's start after its cycles, a birth year after an event, a death before a cycle.
CONTEXT_SOURCES: dict[str, tuple[str, ...]] = {
    "ctx_birth_year": ("patient",),
    "ctx_first_diagnosis_date": ("diagnosis",),
    "ctx_last_event_date": ("diagnosis", "cycle"),
    "ctx_death_date": ("followup",),
    "ctx_line_start_date": ("treatmentline",),
    "ctx_cycle_start_date": ("cycle",),
}

# What a record of each kind gives to the context above (compared before and after a write).
FACTS: dict[str, Callable[[object], object]] = {
    "patient": lambda r: r.birth_year,
    "diagnosis": lambda r: r.diagnosis_date,
    "treatmentline": lambda r: r.start_date,
    "cycle": lambda r: r.start_date,
    "followup": lambda r: r.followup_date if r.vital_status == "dead" else None,
}


def rules_reading_facts_of(kind: str) -> list[Rule]:
    """The rules that read a context column taken from records of `kind`."""
    given = {column for column, kinds in CONTEXT_SOURCES.items() if kind in kinds}
    return [r for r in RULES.values() if given & set(r.columns)]


def _format(message, row: pd.Series) -> str:
    text = str(message)
    try:
        return text % {k: _shown(v) for k, v in row.items()}
    except (KeyError, TypeError, ValueError):
        return text


def _shown(value) -> str:
    """A cell as a message shows it, the same whichever path built the frame: dates as ISO
    days (a form's date, an import's Timestamp), numbers in their shortest form (a form's
    Decimal 9.90, an import's float 9.9)."""
    if value is None or (not isinstance(value, list | tuple | set | dict) and pd.isna(value)):
        return ""
    if isinstance(value, pd.Timestamp | dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | float | Decimal | np.integer | np.floating):
        return f"{float(value):g}"
    return str(value)


# -- the rules -----------------------------------------------------------------------------------
# Bounds are the rulebook's own facts, defined here once. Where the clinical reference gives no
# figure (no maximum dose per drug, no adult BSA range), a generic plausibility bound is soft
# (a data query) and a physical bound, beyond any patient, is hard.

# A dose per administration above these is implausible for any drug in the registry's use.
DOSE_CEILING = {"mg": 6000, "mg/m2": 3000, "mg/kg": 20, "AUC": 7, "g": 6, "ug": 1000}
# ... and above this multiple of it, impossible: refused (a 99,999 mg dose).
DOSE_IMPOSSIBLE_FACTOR = 10

BSA_PLAUSIBLE_MIN = 0.3  # m², a newborn
BSA_PLAUSIBLE_MAX = 3.0  # m²
BSA_PHYSICAL_MAX = 5.0  # m²: 300 kg at 2.2 m is 4.3 m² (Mosteller)

# A lab value this many times above its reference high, or below its reference low divided
# by the other, is queried.
LAB_FAR_ABOVE = 10
LAB_FAR_BELOW = 20


def _date(column: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(column):
        return column
    return pd.to_datetime(column, errors="coerce")


def _number(column: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        return column.astype(float)
    return pd.to_numeric(column.astype(object), errors="coerce")


def _before_birth(frame: pd.DataFrame, column: str) -> pd.Series:
    return _date(frame[column]).dt.year < _number(frame["ctx_birth_year"])


def _after(frame: pd.DataFrame, column: str, bound: str) -> pd.Series:
    return _date(frame[column]) > _date(frame[bound])


def _before(frame: pd.DataFrame, column: str, bound: str) -> pd.Series:
    return _date(frame[column]) < _date(frame[bound])


# -- dates: birth, diagnosis, line, cycle, death ------------------------------------------------

@rule(code="DIAGNOSIS_BEFORE_BIRTH", kind="diagnosis", field="diagnosis_date",
      severity=Severity.HARD, columns=("diagnosis_date", "ctx_birth_year"),
      message=_("The diagnosis on %(diagnosis_date)s is before the patient's birth year "
                "%(ctx_birth_year)s."),
      fails={"diagnosis_date": "1950-01-05", "ctx_birth_year": 1968},
      passes={"diagnosis_date": "2024-01-05", "ctx_birth_year": 1968})
def _diagnosis_before_birth(frame):
    return _before_birth(frame, "diagnosis_date")


@rule(code="DIAGNOSIS_AFTER_DEATH", kind="diagnosis", field="diagnosis_date",
      severity=Severity.HARD, columns=("diagnosis_date", "ctx_death_date"),
      message=_("The diagnosis on %(diagnosis_date)s is after the patient's death on "
                "%(ctx_death_date)s."),
      fails={"diagnosis_date": "2024-03-01", "ctx_death_date": "2024-02-01"},
      passes={"diagnosis_date": "2024-01-05", "ctx_death_date": "2024-02-01"})
def _diagnosis_after_death(frame):
    return _after(frame, "diagnosis_date", "ctx_death_date")


@rule(code="LINE_BEFORE_DIAGNOSIS", kind="treatmentline", field="start_date",
      severity=Severity.HARD, columns=("start_date", "ctx_first_diagnosis_date"),
      message=_("The line starts on %(start_date)s, before the diagnosis on "
                "%(ctx_first_diagnosis_date)s."),
      fails={"start_date": "2023-12-01", "ctx_first_diagnosis_date": "2024-01-05"},
      passes={"start_date": "2024-01-20", "ctx_first_diagnosis_date": "2024-01-05"})
def _line_before_diagnosis(frame):
    return _before(frame, "start_date", "ctx_first_diagnosis_date")


@rule(code="LINE_ENDS_BEFORE_START", kind="treatmentline", field="end_date",
      severity=Severity.HARD, columns=("start_date", "end_date"),
      message=_("The line ends on %(end_date)s, before it starts on %(start_date)s."),
      fails={"start_date": "2024-02-01", "end_date": "2024-01-20"},
      passes={"start_date": "2024-02-01", "end_date": "2024-05-20"})
def _line_ends_before_start(frame):
    return _before(frame, "end_date", "start_date")


@rule(code="LINE_AFTER_DEATH", kind="treatmentline", field="start_date",
      severity=Severity.HARD, columns=("start_date", "ctx_death_date"),
      message=_("The line starts on %(start_date)s, after the patient's death on "
                "%(ctx_death_date)s."),
      fails={"start_date": "2024-03-01", "ctx_death_date": "2024-02-01"},
      passes={"start_date": "2024-01-20", "ctx_death_date": "2024-02-01"})
def _line_after_death(frame):
    return _after(frame, "start_date", "ctx_death_date")


@rule(code="CYCLE_BEFORE_LINE", kind="cycle", field="start_date", severity=Severity.HARD,
      columns=("start_date", "ctx_line_start_date"),
      message=_("The cycle starts on %(start_date)s, before its line on "
                "%(ctx_line_start_date)s."),
      fails={"start_date": "2024-01-10", "ctx_line_start_date": "2024-01-20"},
      passes={"start_date": "2024-01-20", "ctx_line_start_date": "2024-01-20"})
def _cycle_before_line(frame):
    return _before(frame, "start_date", "ctx_line_start_date")


@rule(code="CYCLE_BEFORE_DIAGNOSIS", kind="cycle", field="start_date", severity=Severity.HARD,
      columns=("start_date", "ctx_first_diagnosis_date"),
      message=_("The cycle starts on %(start_date)s, before the diagnosis on "
                "%(ctx_first_diagnosis_date)s."),
      fails={"start_date": "2024-01-01", "ctx_first_diagnosis_date": "2024-01-05"},
      passes={"start_date": "2024-01-20", "ctx_first_diagnosis_date": "2024-01-05"})
def _cycle_before_diagnosis(frame):
    return _before(frame, "start_date", "ctx_first_diagnosis_date")


@rule(code="CYCLE_AFTER_DEATH", kind="cycle", field="start_date", severity=Severity.HARD,
      columns=("start_date", "ctx_death_date"),
      message=_("The cycle starts on %(start_date)s, after the patient's death on "
                "%(ctx_death_date)s."),
      fails={"start_date": "2024-03-01", "ctx_death_date": "2024-02-01"},
      passes={"start_date": "2024-01-20", "ctx_death_date": "2024-02-01"})
def _cycle_after_death(frame):
    return _after(frame, "start_date", "ctx_death_date")


# -- body surface area and doses ----------------------------------------------------------------

@rule(code="CYCLE_BSA_IMPOSSIBLE", kind="cycle", field="bsa_m2", severity=Severity.HARD,
      columns=("bsa_m2",),
      message=_("A body surface area of %(bsa_m2)s m² is beyond any patient."),
      fails={"bsa_m2": 9.9}, passes={"bsa_m2": 1.7})
def _bsa_impossible(frame):
    bsa = _number(frame["bsa_m2"])
    return (bsa > BSA_PHYSICAL_MAX) | (bsa <= 0)


@rule(code="CYCLE_BSA_IMPLAUSIBLE", kind="cycle", field="bsa_m2", severity=Severity.SOFT,
      columns=("bsa_m2",),
      message=_("A body surface area of %(bsa_m2)s m² is outside the plausible range; "
                "please confirm."),
      fails={"bsa_m2": 3.2}, passes={"bsa_m2": 1.7})
def _bsa_implausible(frame):
    bsa = _number(frame["bsa_m2"])
    return ((bsa > BSA_PLAUSIBLE_MAX) & (bsa <= BSA_PHYSICAL_MAX)) | (
        (bsa > 0) & (bsa < BSA_PLAUSIBLE_MIN))


def _dose_ceiling(frame: pd.DataFrame) -> pd.Series:
    return pd.to_numeric(frame["dose_unit"].map(DOSE_CEILING), errors="coerce")


@rule(code="DOSE_IMPOSSIBLE", kind="drugadministration", field="dose", severity=Severity.HARD,
      columns=("dose", "dose_unit"),
      message=_("A dose of %(dose)s %(dose_unit)s is beyond any patient."),
      fails={"dose": 99999, "dose_unit": "mg"}, passes={"dose": 120, "dose_unit": "mg"})
def _dose_impossible(frame):
    return _number(frame["dose"]) > _dose_ceiling(frame) * DOSE_IMPOSSIBLE_FACTOR


@rule(code="DOSE_IMPLAUSIBLE", kind="drugadministration", field="dose", severity=Severity.SOFT,
      columns=("dose", "dose_unit"),
      message=_("A dose of %(dose)s %(dose_unit)s is implausible; please confirm."),
      fails={"dose": 8000, "dose_unit": "mg"}, passes={"dose": 120, "dose_unit": "mg"})
def _dose_implausible(frame):
    dose, ceiling = _number(frame["dose"]), _dose_ceiling(frame)
    return (dose > ceiling) & (dose <= ceiling * DOSE_IMPOSSIBLE_FACTOR)


# -- adverse events -----------------------------------------------------------------------------

@rule(code="AE_BEFORE_BIRTH", kind="adverseevent", field="onset_date", severity=Severity.HARD,
      columns=("onset_date", "ctx_birth_year"),
      message=_("The onset on %(onset_date)s is before the patient's birth year "
                "%(ctx_birth_year)s."),
      fails={"onset_date": "1950-01-05", "ctx_birth_year": 1968},
      passes={"onset_date": "2024-02-05", "ctx_birth_year": 1968})
def _ae_before_birth(frame):
    return _before_birth(frame, "onset_date")


@rule(code="AE_AFTER_DEATH", kind="adverseevent", field="onset_date", severity=Severity.HARD,
      columns=("onset_date", "ctx_death_date"),
      message=_("The onset on %(onset_date)s is after the patient's death on "
                "%(ctx_death_date)s."),
      fails={"onset_date": "2024-03-01", "ctx_death_date": "2024-02-01"},
      passes={"onset_date": "2024-01-20", "ctx_death_date": "2024-02-01"})
def _ae_after_death(frame):
    return _after(frame, "onset_date", "ctx_death_date")


@rule(code="AE_RESOLVED_BEFORE_ONSET", kind="adverseevent", field="resolved_date",
      severity=Severity.HARD, columns=("onset_date", "resolved_date"),
      message=_("The event resolves on %(resolved_date)s, before its onset on %(onset_date)s."),
      fails={"onset_date": "2024-03-01", "resolved_date": "2024-02-01"},
      passes={"onset_date": "2024-03-01", "resolved_date": "2024-03-11"})
def _ae_resolved_before_onset(frame):
    return _before(frame, "resolved_date", "onset_date")


def allowed_grades_text(grades) -> str:
    """The context value AE_GRADE_UNDEFINED reads: a term's grades as "1, 2, 3" ("" unknown)."""
    return ", ".join(str(g) for g in sorted(grades or ()))


@rule(code="AE_GRADE_UNDEFINED", kind="adverseevent", field="grade", severity=Severity.HARD,
      columns=("grade", "ctx_allowed_grades", "ctx_term"),
      message=_("Grade %(grade)s is not defined for %(ctx_term)s (allowed: "
                "%(ctx_allowed_grades)s)."),
      fails={"grade": 4, "ctx_allowed_grades": "1, 2, 3", "ctx_term": "Nausea"},
      passes={"grade": 3, "ctx_allowed_grades": "1, 2, 3", "ctx_term": "Nausea"})
def _ae_grade_undefined(frame):
    allowed = frame["ctx_allowed_grades"].fillna("").astype(str)
    grade = _number(frame["grade"])
    return pd.Series([bool(a) and pd.notna(g) and str(int(g)) not in a.split(", ")
                      for a, g in zip(allowed, grade, strict=True)], index=frame.index,
                     dtype=bool)


@rule(code="AE_SEVERE_NOT_SERIOUS", kind="adverseevent", field="serious",
      severity=Severity.SOFT, columns=("grade", "serious"),
      message=_("A grade %(grade)s event is not marked serious (hospitalisation); "
                "please confirm."),
      fails={"grade": 4, "serious": False}, passes={"grade": 4, "serious": True})
def _ae_severe_not_serious(frame):
    serious = frame["serious"].astype(object).eq(True)
    return (_number(frame["grade"]) >= 4) & ~serious


# -- labs ---------------------------------------------------------------------------------------

@rule(code="LAB_COUNT_NEGATIVE", kind="labresult", field="value", severity=Severity.HARD,
      message=_("A lab value cannot be negative (%(value)s)."), columns=("value",),
      fails={"value": -3}, passes={"value": 3})
def _lab_value_negative(frame):
    # Every lab the registry keeps is a count or a concentration: never negative, in any unit
    # (so also where the unit is not mapped yet and there is no canonical value).
    return _number(frame["value"]) < 0


@rule(code="LAB_FAR_ABOVE_RANGE", kind="labresult", field="value", severity=Severity.SOFT,
      columns=("value_canonical", "ctx_reference_high"),
      message=_("%(value_canonical)s is far above the reference range (up to "
                "%(ctx_reference_high)s); please confirm."),
      fails={"value_canonical": 80.0, "ctx_reference_high": 7.5},
      passes={"value_canonical": 8.0, "ctx_reference_high": 7.5})
def _lab_far_above(frame):
    return _number(frame["value_canonical"]) > LAB_FAR_ABOVE * _number(
        frame["ctx_reference_high"])


@rule(code="LAB_FAR_BELOW_RANGE", kind="labresult", field="value", severity=Severity.SOFT,
      columns=("value_canonical", "ctx_reference_low"),
      message=_("%(value_canonical)s is far below the reference range (from "
                "%(ctx_reference_low)s); please confirm."),
      fails={"value_canonical": 0.05, "ctx_reference_low": 1.8},
      passes={"value_canonical": 1.0, "ctx_reference_low": 1.8})
def _lab_far_below(frame):
    value, low = _number(frame["value_canonical"]), _number(frame["ctx_reference_low"])
    return (value >= 0) & (value < low / LAB_FAR_BELOW)


@rule(code="LAB_BEFORE_BIRTH", kind="labresult", field="collected_date", severity=Severity.HARD,
      columns=("collected_date", "ctx_birth_year"),
      message=_("The sample of %(collected_date)s is before the patient's birth year "
                "%(ctx_birth_year)s."),
      fails={"collected_date": "1950-01-05", "ctx_birth_year": 1968},
      passes={"collected_date": "2024-02-05", "ctx_birth_year": 1968})
def _lab_before_birth(frame):
    return _before_birth(frame, "collected_date")


# -- follow-up ----------------------------------------------------------------------------------

@rule(code="FU_PROGRESSION_DATE_WITHOUT_PROGRESSION", kind="followup",
      field="progression_date", severity=Severity.HARD,
      columns=("progression", "progression_date"),
      message=_("A progression date (%(progression_date)s) needs progression 'yes'."),
      fails={"progression": False, "progression_date": "2024-02-01"},
      passes={"progression": True, "progression_date": "2024-02-01"})
def _fu_progression_date(frame):
    return _date(frame["progression_date"]).notna() & ~frame["progression"].astype(object).eq(
        True)


@rule(code="FU_PROGRESSION_AFTER_VISIT", kind="followup", field="progression_date",
      severity=Severity.HARD, columns=("progression_date", "followup_date"),
      message=_("Progression on %(progression_date)s is dated after the follow-up visit on "
                "%(followup_date)s."),
      fails={"progression_date": "2024-03-01", "followup_date": "2024-02-01"},
      passes={"progression_date": "2024-01-01", "followup_date": "2024-02-01"})
def _fu_progression_after_visit(frame):
    return _after(frame, "progression_date", "followup_date")


@rule(code="FU_DEAD_WITHOUT_CAUSE", kind="followup", field="cause_of_death",
      severity=Severity.SOFT, columns=("vital_status", "cause_of_death"),
      message=_("The patient died but no cause of death is given; please complete it."),
      fails={"vital_status": "dead", "cause_of_death": ""},
      passes={"vital_status": "dead", "cause_of_death": "disease progression"})
def _fu_dead_without_cause(frame):
    cause = frame["cause_of_death"].fillna("").astype(str).str.strip()
    return (frame["vital_status"] == "dead") & (cause == "")


@rule(code="FU_DEATH_BEFORE_EVENT", kind="followup", field="followup_date",
      severity=Severity.HARD, columns=("vital_status", "followup_date", "ctx_last_event_date"),
      message=_("Death on %(followup_date)s is before a recorded diagnosis or cycle on "
                "%(ctx_last_event_date)s."),
      fails={"vital_status": "dead", "followup_date": "2024-01-01",
             "ctx_last_event_date": "2024-02-01"},
      passes={"vital_status": "dead", "followup_date": "2024-03-01",
              "ctx_last_event_date": "2024-02-01"})
def _fu_death_before_event(frame):
    return (frame["vital_status"] == "dead") & _before(frame, "followup_date",
                                                       "ctx_last_event_date")


@rule(code="FU_AFTER_DEATH", kind="followup", field="followup_date", severity=Severity.HARD,
      columns=("followup_date", "ctx_death_date"),
      message=_("A follow-up on %(followup_date)s is after the patient's death on "
                "%(ctx_death_date)s."),
      fails={"followup_date": "2024-03-01", "ctx_death_date": "2024-02-01"},
      passes={"followup_date": "2024-01-20", "ctx_death_date": "2024-02-01"})
def _fu_after_death(frame):
    return _after(frame, "followup_date", "ctx_death_date")


@rule(code="FU_BEFORE_BIRTH", kind="followup", field="followup_date", severity=Severity.HARD,
      columns=("followup_date", "ctx_birth_year"),
      message=_("A follow-up on %(followup_date)s is before the patient's birth year "
                "%(ctx_birth_year)s."),
      fails={"followup_date": "1950-01-05", "ctx_birth_year": 1968},
      passes={"followup_date": "2024-02-05", "ctx_birth_year": 1968})
def _fu_before_birth(frame):
    return _before_birth(frame, "followup_date")
