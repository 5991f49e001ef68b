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
    REGIMEN,
    shown,
)
from research.partner.snapshot import Snapshot

MEASURES = ("patients", "incidence")
MAX_BY = 2
TABLE = "cells"
PATIENTS, WITH_EVENT, RATE = "patients", "patients_with_event", "incidence"
# The most cells one patient can count in, by grouping level: what disclosure control charges.
SENSITIVITY = {PATIENT: 1, REGIMEN: MAX_LINES_COUNTED, CYCLE: MAX_LINES_COUNTED
               * MAX_CYCLES_COUNTED}


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


def _codes(series: pd.Series) -> np.ndarray:
    return series.cat.codes.to_numpy(dtype=np.int64)


class _Units:
    """The units a query counts: pidx and the regimen and cycle codes (when the level has
    them), with an integer key per unit for matching events."""

    def __init__(self, pidx: np.ndarray, regimen: np.ndarray | None = None,
                 cycle: np.ndarray | None = None) -> None:
        self.pidx, self.regimen, self.cycle = pidx, regimen, cycle


def _key(pidx: np.ndarray, regimen: np.ndarray | None, cycle: np.ndarray | None,
         n_regimens: int) -> np.ndarray:
    key = pidx.astype(np.int64)
    if regimen is not None:
        key = key * n_regimens + regimen
    if cycle is not None:
        key = key * (MAX_CYCLES_COUNTED + 1) + cycle
    return key


def aggregate_raw(snapshot: Snapshot, spec: dict) -> RawAnswer:
    """The aggregate's cells with their true counts and digests (see the module's docstring).
    Vectorised: boolean masks and bincounts over categorical codes, no loop per patient."""
    measure, by = spec["measure"], list(spec.get("by") or [])
    filters: dict[str, list[str]] = spec.get("filters") or {}
    patients = snapshot.patients
    n_regimens = len(snapshot.values["regimen"])

    keep = np.ones(len(patients), dtype=bool)
    for dimension, allowed in filters.items():
        if DIMENSIONS[dimension].level == PATIENT:
            keep &= _allowed(_codes(patients[dimension]), dimension, allowed, snapshot)

    level = grouping_level(by)
    cycles_allowed = None
    if "cycle_number" in filters:
        cycles_allowed = np.asarray([int(c) for c in filters["cycle_number"]], dtype=np.int64)
    by_cycle = level == CYCLE or cycles_allowed is not None
    treated_only = measure == "incidence" or "regimen" in filters or level != PATIENT

    if not treated_only:
        units = _Units(np.flatnonzero(keep))
    else:
        if by_cycle:
            frame = snapshot.cycles
            pidx = frame["pidx"].to_numpy(dtype=np.int64)
            regimen = _codes(frame["regimen"])
            cycle = frame["cycle_no"].to_numpy(dtype=np.int64)
            mask = keep[pidx] & (cycle >= 1) & (cycle <= MAX_CYCLES_COUNTED)
            if cycles_allowed is not None:
                mask &= np.isin(cycle, cycles_allowed)
        else:
            frame = snapshot.regimens
            pidx = frame["pidx"].to_numpy(dtype=np.int64)
            regimen = _codes(frame["regimen"])
            cycle = None
            mask = keep[pidx]
        if "regimen" in filters:
            mask &= _allowed(regimen, "regimen", filters["regimen"], snapshot)
        pidx, regimen = pidx[mask], regimen[mask]
        cycle = cycle[mask] if cycle is not None else None
        if level == CYCLE:
            units = _Units(pidx, regimen, cycle)
        elif level == REGIMEN:
            if cycle is not None:  # cycles filtered: a pair counts once
                pair = np.unique(_key(pidx, regimen, None, n_regimens))
                pidx, regimen = pair // n_regimens, pair % n_regimens
            units = _Units(pidx, regimen)
        else:
            units = _Units(np.unique(pidx))

    event = None
    if measure == "incidence":
        event = _events(snapshot, spec, units, level, filters, cycles_allowed, keep, n_regimens)

    # Cell of each unit: the mixed-radix number of its dimensions' codes.
    sizes = [len(snapshot.values[d]) for d in by]
    cell = np.zeros(len(units.pidx), dtype=np.int64)
    valid = np.ones(len(units.pidx), dtype=bool)
    for dimension, size in zip(by, sizes, strict=True):
        if dimension == "regimen":
            codes = units.regimen
        elif dimension == "cycle_number":
            codes = units.cycle - 1
        else:
            codes = _codes(patients[dimension])[units.pidx]
        valid &= codes >= 0
        cell = cell * size + codes
    n_cells = int(np.prod(sizes)) if sizes else 1
    cell, unit_pidx = cell[valid], units.pidx[valid]
    patient_ids = snapshot.patient_ids[unit_pidx]

    table = _grid(snapshot, by, sizes)
    table[PATIENTS] = np.bincount(cell, minlength=n_cells).astype(np.int64)
    table[PATIENTS + DIGEST_SUFFIX] = set_digests(cell, patient_ids, n_cells)
    rates = {}
    if event is not None:
        hit = event[valid]
        table[WITH_EVENT] = np.bincount(cell[hit], minlength=n_cells).astype(np.int64)
        table[WITH_EVENT + DIGEST_SUFFIX] = set_digests(cell[hit], patient_ids[hit], n_cells)
        rates = {TABLE: {RATE: (WITH_EVENT, PATIENTS)}}
    return RawAnswer(population=np.unique(patient_ids), tables={TABLE: table}, rates=rates,
                     sensitivity=SENSITIVITY[level],
                     snapshot_at=snapshot.snapshot_at.isoformat())


def _events(snapshot: Snapshot, spec: dict, units: _Units, level: str,
            filters: dict[str, list[str]], cycles_allowed: np.ndarray | None,
            keep: np.ndarray, n_regimens: int) -> np.ndarray:
    """For each unit, whether it had an event of the term at the grade or more in a cycle it
    counts by."""
    events = snapshot.adverse_events
    term = snapshot.terms.index(spec["term"]) if spec["term"] in snapshot.terms else -1
    pidx = events["pidx"].to_numpy(dtype=np.int64)
    regimen = _codes(events["regimen"])
    cycle = events["cycle_no"].to_numpy(dtype=np.int64)
    mask = ((_codes(events["term"]) == term)
            & (events["max_grade"].to_numpy() >= int(spec["min_grade"])) & keep[pidx])
    if level == CYCLE or cycles_allowed is not None:
        mask &= (cycle >= 1) & (cycle <= MAX_CYCLES_COUNTED)
    if cycles_allowed is not None:
        mask &= np.isin(cycle, cycles_allowed)
    if "regimen" in filters:
        mask &= _allowed(regimen, "regimen", filters["regimen"], snapshot)
    pidx, regimen, cycle = pidx[mask], regimen[mask], cycle[mask]
    if level == CYCLE:
        return np.isin(_key(units.pidx, units.regimen, units.cycle, n_regimens),
                       _key(pidx, regimen, cycle, n_regimens))
    if level == REGIMEN:
        return np.isin(_key(units.pidx, units.regimen, None, n_regimens),
                       _key(pidx, regimen, None, n_regimens))
    return np.isin(units.pidx, pidx)


def _grid(snapshot: Snapshot, by: list[str], sizes: list[int]) -> pd.DataFrame:
    """Every cell of the grouping, in the order of the cell numbers (first dimension slowest)."""
    rows = list(itertools.product(*[range(size) for size in sizes]))
    columns = {dimension: [shown(dimension, snapshot.values[dimension][row[i]]) for row in rows]
               for i, dimension in enumerate(by)}
    return pd.DataFrame(columns, index=range(len(rows)))
