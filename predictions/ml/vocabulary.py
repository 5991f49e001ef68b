"""What the risk models read from the starter vocabulary (registry/data/starter_vocabulary.json).

The file is read directly (plain JSON, no Django): regimens with their phases, cycle length and
febrile-neutropenia risk; drugs with their emetogenic class and role. One source of truth for
these clinical facts, shared with the registry and the synthetic cohort.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pandas as pd

STARTER_VOCABULARY = (
    Path(__file__).resolve().parents[2] / "registry" / "data" / "starter_vocabulary.json"
)

# Ordered from least to most: a class's position is its ordinal value.
EMETOGENIC_CLASSES = ("minimal", "low", "moderate", "high")
FN_RISK_CLASSES = ("low", "intermediate", "high")


@cache
def concepts() -> dict[str, dict]:
    """Every concept of the starter vocabulary by code."""
    data = json.loads(STARTER_VOCABULARY.read_text(encoding="utf-8"))
    return {c["code"]: c for c in data["concepts"]}


def drug_emetogenic_class(code: str, dose: float | None = None, unit: str | None = None) -> str:
    """A drug's emetogenic class; dose-dependent classes (`emetogenic_high_if`) apply when the
    dose and its unit are given. A drug without a class is minimal when oral, else low."""
    attrs = concepts()[code]["attributes"]
    klass = attrs.get("emetogenic_class", "minimal" if attrs.get("oral") else "low")
    high_if = attrs.get("emetogenic_high_if")
    if high_if and dose is not None and unit == high_if["dose_unit"] and (
        ("min_dose" in high_if and dose >= high_if["min_dose"])
        or ("above_dose" in high_if and dose > high_if["above_dose"])
    ):
        klass = "high"
    return klass


@cache
def regimen_cycle_classes() -> pd.DataFrame:
    """One row per (regimen code, cycle number) of every regimen's plan: the cycle's emetogenic
    class (the highest of its phase's drugs at the planned dose, or the regimen's own class when
    the vocabulary gives one) and the regimen's febrile-neutropenia risk class."""
    rows = []
    for code, concept in concepts().items():
        if concept["domain"] != "regimen":
            continue
        attrs = concept["attributes"]
        cycle_no = 0
        for phase in attrs["phases"]:
            classes = [drug_emetogenic_class(d["drug"], d["dose"], d["unit"])
                       for d in phase["drugs"]]
            klass = attrs.get("emetogenic_class",
                              max(classes, key=EMETOGENIC_CLASSES.index))
            for _ in range(phase["cycles"]):
                cycle_no += 1
                rows.append({"regimen_code": code, "cycle_no": cycle_no,
                             "emetogenic_class": klass, "fn_risk": attrs["fn_risk"]})
    return pd.DataFrame(rows)


@cache
def drug_roles() -> dict[str, str]:
    """Drug code -> role (antineoplastic, antiemetic, gcsf)."""
    return {code: c["attributes"].get("role", "") for code, c in concepts().items()
            if c["domain"] == "drug"}
