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

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

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

    def failing(self, frame: pd.DataFrame) -> pd.Series:
        """True where a row of `frame` breaks the rule (rows with missing inputs pass)."""
        result = self.check(frame[list(self.columns)])
        return result.fillna(False).astype(bool)


RULES: dict[str, Rule] = {}


def rule(*, code: str, kind: str, field: str, severity: Severity, message,
         columns: Iterable[str]) -> Callable[[Callable[[pd.DataFrame], pd.Series]], Rule]:
    """Register the decorated check as a rule; a code is registered once."""

    def register(check: Callable[[pd.DataFrame], pd.Series]) -> Rule:
        if code in RULES:
            raise ValueError(f"Rule {code} is defined twice.")
        RULES[code] = Rule(code=code, kind=kind, field=field, severity=Severity(severity),
                           message=message, columns=tuple(columns), check=check)
        return RULES[code]

    return register


def rules_for(kind: str) -> list[Rule]:
    return [r for r in RULES.values() if r.kind == kind]


VIOLATION_COLUMNS = ["row", "code", "severity", "field", "message"]


def evaluate(kind: str, frame: pd.DataFrame, *, severities: Iterable[Severity] | None = None
             ) -> tuple[pd.DataFrame, list[str]]:
    """Every rule of `kind` over `frame`.

    Returns the violations (one row per failing row and rule: the frame's index label as
    ``row``, the rule's code, severity, field and message) and the codes of the rules skipped
    because the frame lacks their columns.
    """
    wanted = set(severities) if severities is not None else set(Severity)
    found, skipped = [], []
    for r in rules_for(kind):
        if r.severity not in wanted:
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


def _format(message, row: pd.Series) -> str:
    text = str(message)
    try:
        return text % {k: ("" if pd.isna(v) else v) for k, v in row.items()}
    except (KeyError, TypeError, ValueError):
        return text


# An example of the form every rule takes; the rulebook's rules follow it.
@rule(code="LAB_COUNT_NEGATIVE", kind="labresult", field="value", severity=Severity.HARD,
      message=_("A lab value cannot be negative."), columns=("value_canonical",))
def _lab_value_negative(frame: pd.DataFrame) -> pd.Series:
    return frame["value_canonical"] < 0
