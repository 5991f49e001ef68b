"""Partner feasibility: how many patients of the analysis snapshot meet a trial's criteria, per
hospital tier and per region, before disclosure control. Never per patient, never per site.

Criteria (checked by the endpoint's input, research/api/partner.py; every key optional)::

    {"cancer": ["C34", "C22.0"],            # ICD-10 code prefixes of the first diagnosis
     "stage_groups": ["III", "IVA"],         # a main group (III matches IIIA) or as recorded
     "biomarkers": {"EGFR": "+"},            # value of a known biomarker, first diagnosis
     "min_prior_lines": 1, "max_prior_lines": 2,   # treatment lines recorded
     "labs": [{"concept": "751-8", "min": 1.5, "max": null}],  # latest value, canonical unit
     "site_tiers": ["tertiary"], "regions": ["Zhejiang"]}

Every criterion narrows the cohort (AND); the values of a list widen it (OR).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from research.partner.answer import DIGEST_SUFFIX, RawAnswer, set_digests
from research.partner.dimensions import shown
from research.partner.snapshot import Snapshot, biomarker_column

# The output tables and the dimension each counts by.
TABLES = {"by_site_tier": "site_tier", "by_region": "region"}
PATIENTS = "patients"


def _category_mask(series: pd.Series, test) -> np.ndarray:
    """Rows whose categorical value passes `test` (evaluated once per category)."""
    categories = series.cat.categories
    passing = np.array([bool(test(str(c))) for c in categories] + [False], dtype=bool)
    codes = series.cat.codes.to_numpy(dtype=np.int64)
    return passing[np.where(codes >= 0, codes, len(categories))]


def feasibility_mask(snapshot: Snapshot, criteria: dict) -> np.ndarray:
    """Which patients of the snapshot (by position) meet the criteria."""
    patients = snapshot.patients
    mask = np.ones(len(patients), dtype=bool)
    if criteria.get("cancer"):
        prefixes = tuple(criteria["cancer"])
        mask &= _category_mask(patients["cancer_code"], lambda c: c.startswith(prefixes))
    if criteria.get("stage_groups"):
        wanted = set(criteria["stage_groups"])
        mask &= (_category_mask(patients["stage_group"], lambda s: s.strip().upper() in wanted)
                 | _category_mask(patients["stage"], lambda s: s in wanted))
    for name, value in (criteria.get("biomarkers") or {}).items():
        mask &= _category_mask(patients[biomarker_column(name)], lambda v, w=value: v == w)
    lines = patients["line_count"].to_numpy()
    if criteria.get("min_prior_lines") is not None:
        mask &= lines >= criteria["min_prior_lines"]
    if criteria.get("max_prior_lines") is not None:
        mask &= lines <= criteria["max_prior_lines"]
    labs = snapshot.labs
    if criteria.get("labs"):
        lab_codes = labs["lab"].cat.codes.to_numpy(dtype=np.int64)
        values = labs["value"].to_numpy()
        lab_pidx = labs["pidx"].to_numpy(dtype=np.int64)
        for lab in criteria["labs"]:
            code = (snapshot.lab_codes.index(lab["concept"])
                    if lab["concept"] in snapshot.lab_codes else -2)
            hit = lab_codes == code
            if lab.get("min") is not None:
                hit &= values >= lab["min"]
            if lab.get("max") is not None:
                hit &= values <= lab["max"]
            found = np.zeros(len(patients), dtype=bool)
            found[lab_pidx[hit]] = True
            mask &= found
    for key, column in (("site_tiers", "site_tier"), ("regions", "region")):
        if criteria.get(key):
            wanted_values = set(criteria[key])
            mask &= _category_mask(patients[column], lambda v, w=wanted_values: v in w)
    return mask


def feasibility_raw(snapshot: Snapshot, criteria: dict) -> RawAnswer:
    """The count of matching patients per site tier and per region (true counts and digests):
    each patient is in one cell of each table."""
    mask = feasibility_mask(snapshot, criteria)
    pidx = np.flatnonzero(mask)
    patient_ids = snapshot.patient_ids[pidx]
    tables = {}
    for name, dimension in TABLES.items():
        values = snapshot.values[dimension]
        codes = snapshot.patients[dimension].cat.codes.to_numpy(dtype=np.int64)[pidx]
        valid = codes >= 0
        table = pd.DataFrame({dimension: [shown(dimension, v) for v in values]})
        table[PATIENTS] = np.bincount(codes[valid], minlength=len(values)).astype(np.int64)
        table[PATIENTS + DIGEST_SUFFIX] = set_digests(codes[valid], patient_ids[valid],
                                                      len(values))
        tables[name] = table
    # A patient counts once in each table (one tier, one region).
    return RawAnswer(population=np.unique(patient_ids), tables=tables,
                     sensitivity=len(tables),
                     snapshot_at=snapshot.snapshot_at.isoformat())
