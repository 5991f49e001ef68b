"""Partner aggregates: counts of distinct patients per cell of up to two dimensions, over the
analysis snapshot, before disclosure control.

A spec (checked by the endpoint's input, research/api/partner.py)::

    {"measure": "patients" | "incidence",
     "by": ["regimen", "cycle_number"],            # 0 to MAX_BY dimensions
     "filters": {"cancer_site": ["C34"]},          # dimension -> allowed values (text)
     "term": "Neutrophil count decreased",         # incidence only: a CTCAE term code
     "min_grade": 3}                               # incidence only: 1 to 5

What is counted depends on the grouping level (research.partner.dimensions):

- patient level (no regimen, no cycle number in `by`): each patient once. With a regimen filter,
  the patients treated with one of those regimens in their first lines.
- regimen level: each (patient, regimen) pair of the patient's first MAX_LINES_COUNTED lines
  (a regimen given twice is one pair), so a patient is in at most MAX_LINES_COUNTED cells;
- cycle level (cycle_number in `by`, with regimen): each (patient, regimen, cycle) for cycles
  1 to MAX_CYCLES_COUNTED: at most MAX_LINES_COUNTED x MAX_CYCLES_COUNTED cells.

"incidence" counts, per cell, the treated units (`patients`: patients, patient-regimen pairs or
patient-regimen-cycles, all distinct patients within a cell) and those with at least one event
of `term` at grade >= `min_grade` in a cycle they count by (`patients_with_event`); the rate
`incidence` is their ratio. Every cell of the grid is a row, empty ones included, so whether a
row is present tells nothing.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from research.partner.answer import DIGEST_SUFFIX, RawAnswer, set_digests
from research.partner.dimensions import (
    CYCLE,
    DIMENSIONS,
    MAX_CYCLES_COUNTED,
    MAX_LINES_COUNTED,
    PATIENT,
    PATIENTS,
    RATE,
    REGIMEN,
    WITH_EVENT,
    shown,
)
from research.partner.snapshot import Snapshot

TABLE = "cells"
# The most cells one patient can count in, by grouping level. What disclosure control charges
# is this times the count columns (an incidence table's patient counts in both of its columns):
# sensitivity_of.
SENSITIVITY = {PATIENT: 1, REGIMEN: MAX_LINES_COUNTED, CYCLE: MAX_LINES_COUNTED
               * MAX_CYCLES_COUNTED}
# Count columns of each measure's table.
COUNT_COLUMNS = {"patients": 1, "incidence": 2}


def sensitivity_of(spec: dict) -> int:
    """The most released counts one patient can change in the answer to `spec`: from the
    question alone (the partner reads the budget it is charged)."""
    return SENSITIVITY[grouping_level(spec["by"])] * COUNT_COLUMNS[spec["measure"]]


def grouping_level(by: list[str]) -> str:
    if "cycle_number" in by:
        return CYCLE
    return REGIMEN if "regimen" in by else PATIENT


def _allowed(codes: np.ndarray, dimension: str, allowed: list[str], snapshot: Snapshot
             ) -> np.ndarray:
    """Which of `codes` (a dimension's categorical codes) are among the `allowed` values (values
    the snapshot does not know match nothing)."""
    known = snapshot.values[dimension]
    wanted = [known.index(v) for v in allowed if v in known]
    return np.isin(codes, np.asarray(wanted, dtype=np.int64))


def _flags(size: int, rows: np.ndarray) -> np.ndarray:
    flags = np.zeros(size, dtype=bool)
    flags[rows] = True
    return flags


def aggregate_raw(snapshot: Snapshot, spec: dict) -> RawAnswer:
    """The aggregate's cells with their true counts and digests (see the module's docstring).
    Vectorised: boolean masks, scattered flags and bincounts over categorical codes; no loop
    per patient, no sort of the cohort."""
    measure, by = spec["measure"], list(spec.get("by") or [])
    filters: dict[str, list[str]] = spec.get("filters") or {}
    n_patients = len(snapshot.patients)
    n_regimens, n_cycles = len(snapshot.regimens), len(snapshot.cycles)
    column = snapshot.array

    keep = np.ones(n_patients, dtype=bool)
    for dimension, allowed in filters.items():
        if DIMENSIONS[dimension].level == PATIENT:
            keep &= _allowed(column("patients", dimension), dimension, allowed, snapshot)

    level = grouping_level(by)
    # The (patient, regimen) pairs kept, and the cycles kept when cycles matter.
    regimen_pidx = column("regimens", "pidx")
    regimen_codes = column("regimens", "regimen")
    pairs = keep[regimen_pidx]
    if "regimen" in filters:
        pairs &= _allowed(regimen_codes, "regimen", filters["regimen"], snapshot)
    kept_cycles = None
    if level == CYCLE or "cycle_number" in filters:
        cycle_no = column("cycles", "cycle_no")
        cycle_pair = column("cycles", "regimen_row")
        kept_cycles = pairs[cycle_pair] & (cycle_no >= 1) & (cycle_no <= MAX_CYCLES_COUNTED)
        if "cycle_number" in filters:
            kept_cycles &= np.isin(cycle_no, [int(c) for c in filters["cycle_number"]])
        if level != CYCLE:  # a pair counts when one of its cycles is kept
            pairs &= _flags(n_regimens, cycle_pair[kept_cycles])

    cycle_codes = None
    if level == CYCLE:
        rows = np.flatnonzero(kept_cycles)
        unit_pidx = column("cycles", "pidx")[rows]
        unit_regimen = column("cycles", "regimen")[rows]
        cycle_codes = column("cycles", "cycle_no")[rows].astype(np.int64) - 1
    elif level == REGIMEN:
        rows = np.flatnonzero(pairs)
        unit_pidx, unit_regimen = regimen_pidx[rows], regimen_codes[rows]
    elif measure == "incidence" or "regimen" in filters:  # the treated patients
        rows = unit_pidx = np.flatnonzero(_flags(n_patients, regimen_pidx[pairs]))
        unit_regimen = None
    else:
        rows = unit_pidx = np.flatnonzero(keep)
        unit_regimen = None

    event = None
    if measure == "incidence":
        term = snapshot.terms.index(spec["term"]) if spec["term"] in snapshot.terms else -1
        hit = ((column("adverse_events", "term") == term)
               & (column("adverse_events", "max_grade") >= int(spec["min_grade"])))
        event_cycle = column("adverse_events", "cycle_row")
        event_pair = column("adverse_events", "regimen_row")
        hit &= kept_cycles[event_cycle] if kept_cycles is not None else pairs[event_pair]
        if level == CYCLE:
            flagged = _flags(n_cycles, event_cycle[hit])
        elif level == REGIMEN:
            flagged = _flags(n_regimens, event_pair[hit])
        else:
            flagged = _flags(n_patients, column("adverse_events", "pidx")[hit])
        event = flagged[rows]

    # Cell of each unit: the mixed-radix number of its dimensions' codes.
    sizes = [len(snapshot.values[d]) for d in by]
    cell = np.zeros(len(unit_pidx), dtype=np.int64)
    valid = np.ones(len(unit_pidx), dtype=bool)
    for dimension, size in zip(by, sizes, strict=True):
        if dimension == "regimen":
            codes = unit_regimen
        elif dimension == "cycle_number":
            codes = cycle_codes
        else:
            codes = column("patients", dimension)[unit_pidx]
        valid &= codes >= 0
        cell = cell * size + codes
    n_cells = int(np.prod(sizes)) if sizes else 1
    cell, unit_pidx = cell[valid], unit_pidx[valid]
    patient_ids = snapshot.patient_ids[unit_pidx]

    table = _grid(snapshot, by, sizes)
    table[PATIENTS] = np.bincount(cell, minlength=n_cells).astype(np.int64)
    table[PATIENTS + DIGEST_SUFFIX] = set_digests(cell, patient_ids, n_cells)
    rates = {}
    if event is not None:
        hit_units = event[valid]
        table[WITH_EVENT] = np.bincount(cell[hit_units], minlength=n_cells).astype(np.int64)
        table[WITH_EVENT + DIGEST_SUFFIX] = set_digests(cell[hit_units],
                                                        patient_ids[hit_units], n_cells)
        rates = {TABLE: {RATE: (WITH_EVENT, PATIENTS)}}
    # The snapshot's patients are in id order: the flagged ones are the sorted population.
    population = snapshot.patient_ids[_flags(n_patients, unit_pidx)]
    return RawAnswer(population=population, tables={TABLE: table}, rates=rates,
                     sensitivity=sensitivity_of(spec),
                     snapshot_at=snapshot.snapshot_at.isoformat())


def _grid(snapshot: Snapshot, by: list[str], sizes: list[int]) -> pd.DataFrame:
    """Every cell of the grouping, in the order of the cell numbers (first dimension slowest)."""
    rows = list(itertools.product(*[range(size) for size in sizes]))
    columns = {dimension: [shown(dimension, snapshot.values[dimension][row[i]]) for row in rows]
               for i, dimension in enumerate(by)}
    return pd.DataFrame(columns, index=range(len(rows)))
