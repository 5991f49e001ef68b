"""Cohort criteria of a data request: read, checked and normalised in one place (forms, the
API and the release build read them through here).

Stored as JSON on the request::

    {"cancer": ["C34", "C50.9"],          # ICD-10 codes or their prefixes (any diagnosis)
     "diagnosis_year_from": 2018, "diagnosis_year_to": 2024,
     "stage_groups": ["III", "IV"],        # stage group of that same diagnosis
     "chemotherapy": true}                 # at least one treatment line

Every key is optional; an empty criteria dict means every consenting patient of the sites.
"""

from __future__ import annotations

import re
from typing import Any

from registry.errors import ErrorCollector
from research import limits as L

KEYS = ("cancer", "diagnosis_year_from", "diagnosis_year_to", "stage_groups", "chemotherapy")
CODE_PATTERN = re.compile(r"^[A-Z][0-9]{2}(\.[0-9A-Z]{1,4})?$")
STAGE_PATTERN = re.compile(r"^[0-9A-Za-z]{1,8}$")


def _codes(value: Any, field: str, errors: ErrorCollector, pattern: re.Pattern, upper: bool
           ) -> list[str]:
    if value in (None, "", []):
        return []
    if isinstance(value, str):
        value = [v for v in re.split(r"[,\s;，；]+", value) if v]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        errors.add(field, "Give a list of codes.")
        return []
    if len(value) > L.CRITERIA_LIST_MAX:
        errors.add(field, f"At most {L.CRITERIA_LIST_MAX} codes.")
        return []
    out = []
    for raw in value:
        code = raw.strip().upper() if upper else raw.strip()
        if len(code) > L.CRITERIA_CODE_MAX_LENGTH or not pattern.match(code):
            errors.add(field, f"{raw[:L.CRITERIA_CODE_MAX_LENGTH]!r} is not a valid code.")
        elif code not in out:
            out.append(code)
    return sorted(out)


def _year(value: Any, field: str, errors: ErrorCollector) -> int | None:
    if value in (None, ""):
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        errors.add(field, "Give a year.")
        return None
    try:
        year = int(value)
    except ValueError:
        errors.add(field, "Give a year.")
        return None
    if not L.DIAGNOSIS_YEAR_MIN <= year <= L.DIAGNOSIS_YEAR_MAX:
        errors.add(field, f"A year from {L.DIAGNOSIS_YEAR_MIN} to {L.DIAGNOSIS_YEAR_MAX}.")
        return None
    return year


def criteria_clean(raw: Any) -> dict:
    """The criteria normalised (sorted codes, no empty keys), or ValidationFailed naming each
    problem. Unknown keys are refused (a typo must not silently widen the cohort)."""
    errors = ErrorCollector()
    if raw in (None, ""):
        raw = {}
    if not isinstance(raw, dict):
        errors.add("criteria", "Cohort criteria must be an object.")
        errors.raise_if_any()
    unknown = sorted(str(k)[:40] for k in raw if k not in KEYS)
    if unknown:
        errors.add("criteria", f"Unknown criteria: {', '.join(unknown)}; known: {', '.join(KEYS)}.")
    out: dict[str, Any] = {}
    cancer = _codes(raw.get("cancer"), "cancer", errors, CODE_PATTERN, True)
    if cancer:
        out["cancer"] = cancer
    stages = _codes(raw.get("stage_groups"), "stage_groups", errors, STAGE_PATTERN, True)
    if stages:
        out["stage_groups"] = stages
    start = _year(raw.get("diagnosis_year_from"), "diagnosis_year_from", errors)
    end = _year(raw.get("diagnosis_year_to"), "diagnosis_year_to", errors)
    if start is not None and end is not None and end < start:
        errors.add("diagnosis_year_to", "The last year is before the first.")
    if start is not None:
        out["diagnosis_year_from"] = start
    if end is not None:
        out["diagnosis_year_to"] = end
    chemo = raw.get("chemotherapy")
    if chemo not in (None, "", False, True, "true", "false", "on"):
        errors.add("chemotherapy", "Yes or no.")
    elif chemo in (True, "true", "on"):
        out["chemotherapy"] = True
    errors.raise_if_any()
    return out
