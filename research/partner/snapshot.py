"""The partner API's analysis snapshot: the whole cohort a partner's aggregate or feasibility
query may look at, as compact frames held in process memory.

Who is in it is the data-request cohort rule for a commercial purpose (research.selectors.
cohort): consent covering commercial use, not withdrawn, the patient submitted (or later), and
only records submitted, verified or locked. The frames:

- `patients`: one row per patient (its position is the patient's index `pidx` in the other
  frames): patient_id, the dimensions of research.partner.dimensions (categorical over their
  listed values), birth_year, cancer_code (the full ICD-10 code of the first diagnosis),
  stage_group (as recorded), line_count (treatment lines recorded) and one `biomarker_<KEY>`
  column per known biomarker of the first diagnosis ("+", "-", "50%"...);
- `lines`: pidx, patient_id, line_no, line_rank (1 for the patient's first line), regimen;
- `regimens`: the distinct (pidx, regimen) pairs of the first MAX_LINES_COUNTED lines;
- `cycles`: the distinct (pidx, regimen, cycle_no) of the cycles of those lines, with
  regimen_row (the row of their pair in `regimens`);
- `adverse_events`: pidx, regimen, cycle_no, term (CTCAE term code), max_grade: the highest
  grade of each term that occurs in a cycle of those lines, with cycle_row (the row of the
  cycle in `cycles`) and regimen_row;
- `labs`: pidx, lab (LOINC code), value (in the canonical unit), unit: the latest value of
  each lab concept per patient.

It is read through the registry's bulk reader in one query per record kind (PostgreSQL COPY);
on SQLite (the embedded demo), where COPY does not exist, the same columns are read with one
ORM query per kind. It is rebuilt when older than PARTNER_SNAPSHOT_MAX_AGE_SECONDS, one
rebuild at a time per process; queries keep reading the previous snapshot meanwhile.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from django.conf import settings
from django.db import connection
from django.utils import timezone

from registry.kinds import KINDS
from registry.models import Concept, Site
from registry.models.terminology import Domain
from registry.selectors.bulk import ALL_SITES, records_frame
from research.models import Purpose
from research.partner.dimensions import (
    AGE_BANDS,
    BIOMARKERS,
    MAX_LINES_COUNTED,
    UNKNOWN,
    dimension_codes,
    dimension_values,
)
from research.selectors.cohort import RELEASED_STATUSES, cohort_mask

_STAGE_PATTERN = r"^\s*(?:(IV|III|II|I|0)|BCLC\s*([0ABCD]))"


@dataclass(frozen=True)
class Snapshot:
    patients: pd.DataFrame
    lines: pd.DataFrame
    regimens: pd.DataFrame
    cycles: pd.DataFrame
    adverse_events: pd.DataFrame
    labs: pd.DataFrame
    # Dimension -> its values, in the order of the categorical columns' codes.
    values: dict[str, tuple[str, ...]]
    # CTCAE term codes and lab (LOINC) codes, in the order of their categorical codes.
    terms: tuple[str, ...]
    lab_codes: tuple[str, ...]
    snapshot_at: dt.datetime
    built_at: float = field(default=0.0, compare=False)  # the clock's reading at build time

    # Columns as numpy arrays, made once per snapshot (see `array`).
    _arrays: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def patient_ids(self) -> np.ndarray:
        return self.array("patients", "patient_id")

    def array(self, frame: str, column: str) -> np.ndarray:
        """A column of one of the frames as a numpy array (a categorical's codes, -1 for
        missing), converted once and kept: queries read these, not the frames."""
        key = (frame, column)
        found = self._arrays.get(key)
        if found is None:
            series = getattr(self, frame)[column]
            found = (series.cat.codes.to_numpy() if isinstance(series.dtype, pd.CategoricalDtype)
                     else series.to_numpy())
            found.flags.writeable = False
            self._arrays[key] = found
        return found


# -- reading -------------------------------------------------------------------------------------


def _read(kind: str, columns: list[str]) -> pd.DataFrame:
    """One record kind's columns over every site, current rows: the bulk reader on PostgreSQL,
    one ORM query on other databases."""
    if connection.vendor == "postgresql":
        return records_frame(kind, sites=ALL_SITES, columns=columns)[columns]
    rows = list(KINDS[kind].model.objects.order_by("id").values_list(*columns))
    frame = pd.DataFrame.from_records(rows, columns=columns)
    for column in columns:
        if column.endswith("_date"):
            frame[column] = pd.to_datetime(frame[column])
    return frame


def _released(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["status"].isin(set(RELEASED_STATUSES))]


def _categorical(values: pd.Series, categories: tuple[str, ...]) -> pd.Series:
    """`values` as a categorical over `categories`; anything else (missing, not listed) is
    UNKNOWN when the categories have it."""
    out = pd.Categorical(values.astype(object).where(values.notna(), None),
                         categories=list(categories))
    series = pd.Series(out, index=values.index)
    if UNKNOWN in categories:
        series = series.fillna(UNKNOWN)
    return series


def _biomarker_dicts(raw: pd.Series) -> pd.Series:
    """Stored biomarkers (a dict from the ORM, JSON text from the bulk reader) as dicts, each
    distinct value parsed once."""
    def parse(value) -> dict:
        if isinstance(value, dict):
            return value
        if isinstance(value, str) and value:
            try:
                parsed = json.loads(value)
            except ValueError:
                return {}
            return parsed if isinstance(parsed, dict) else {}
        return {}

    text = raw.map(lambda v: json.dumps(v, sort_keys=True) if isinstance(v, dict) else v)
    parsed = {value: parse(value) for value in text.dropna().unique()}
    return text.map(lambda v: parsed.get(v, {}))


def biomarker_column(name: str) -> str:
    return f"biomarker_{name}"


def _stage_main(stage_group: pd.Series) -> pd.Series:
    found = stage_group.fillna("").astype(str).str.upper().str.extract(_STAGE_PATTERN)
    return found[0].where(found[0].notna(), "BCLC " + found[1])


def _age_band(age: pd.Series) -> pd.Series:
    bins = [low for _label, low, _high in AGE_BANDS] + [AGE_BANDS[-1][2]]
    labels = [label for label, _low, _high in AGE_BANDS]
    return pd.cut(age, bins=bins, labels=labels, right=False).astype(object)


def _rows_of(frame: pd.DataFrame, target: pd.DataFrame, keys: list[str]) -> np.ndarray:
    """For each row of `frame`, the position of the row of `target` with the same `keys`
    (every one has one)."""
    position = target[keys].assign(_row=np.arange(len(target), dtype=np.int64))
    found = frame[keys].merge(position, on=keys, how="left", sort=False)["_row"]
    return found.to_numpy(dtype=np.int64)


# -- building ------------------------------------------------------------------------------------


def snapshot_build() -> Snapshot:
    """Read the cohort and build the snapshot: five set-based reads of the clinical record, and
    small reads of the sites and the vocabulary."""
    snapshot_at = timezone.now()
    values = dimension_codes(dimension_values())
    concepts = pd.DataFrame.from_records(
        list(Concept.objects.filter(domain__in=[Domain.CONDITION, Domain.REGIMEN,
                                                Domain.ADVERSE_EVENT, Domain.LAB, Domain.UNIT])
             .values_list("id", "code", "domain")), columns=["id", "code", "domain"])
    code_of = dict(zip(concepts["id"], concepts["code"], strict=True))
    terms = tuple(sorted(concepts.loc[concepts["domain"] == Domain.ADVERSE_EVENT, "code"]))
    lab_codes = tuple(sorted(concepts.loc[concepts["domain"] == Domain.LAB, "code"]))

    people = _read("patient", ["id", "site_id", "status", "sex", "birth_year", "consent_scope",
                               "withdrawn_date"])
    # The cohort rule without criteria looks at the patients alone.
    none = pd.DataFrame({"status": [], "patient_id": [], "cancer_id": [], "stage_group": [],
                         "diagnosis_date": pd.Series([], dtype="datetime64[s]")})
    people = people[cohort_mask(patients=people, diagnoses=none, lines=none, concept_codes={},
                                criteria={}, purpose=Purpose.COMMERCIAL, withdrawn=set())]
    people = people.sort_values("id").reset_index(drop=True)
    patient_ids = people["id"].to_numpy(dtype=np.int64)
    pidx_of = pd.Series(np.arange(len(people), dtype=np.int64), index=patient_ids)

    def own(frame: pd.DataFrame) -> pd.DataFrame:
        frame = _released(frame)
        frame = frame[frame["patient_id"].isin(pidx_of.index)].copy()
        frame["pidx"] = pidx_of.reindex(frame["patient_id"].to_numpy()).to_numpy()
        return frame

    sites = pd.DataFrame.from_records(list(Site.objects.values_list("id", "tier", "province")),
                                      columns=["id", "tier", "province"]).set_index("id")
    patients = pd.DataFrame({"patient_id": patient_ids})
    site_ids = people["site_id"].astype("int64")
    patients["site_tier"] = _categorical(site_ids.map(sites["tier"]), values["site_tier"])
    province = site_ids.map(sites["province"])
    patients["region"] = _categorical(province.where(province != ""), values["region"])
    patients["sex"] = _categorical(people["sex"], values["sex"])
    patients["birth_year"] = people["birth_year"].astype("Int16").to_numpy()

    # The first diagnosis: the earliest, then the lowest id.
    d = own(_read("diagnosis", ["id", "patient_id", "status", "diagnosis_date", "cancer_id",
                                "stage_group", "biomarkers"]))
    d = d.sort_values(["pidx", "diagnosis_date", "id"]).drop_duplicates("pidx")
    first = d.set_index("pidx").reindex(np.arange(len(patients)))
    cancer_code = first["cancer_id"].map(lambda c: code_of.get(int(c)) if pd.notna(c) else None)
    patients["cancer_code"] = cancer_code.astype("category")
    patients["cancer_site"] = _categorical(cancer_code.astype("string").str[:3],
                                           values["cancer_site"])
    patients["stage_group"] = first["stage_group"].astype("category")
    patients["stage"] = _categorical(_stage_main(first["stage_group"]), values["stage"])
    year = pd.to_datetime(first["diagnosis_date"]).dt.year
    patients["diagnosis_year"] = _categorical(
        year.map(lambda y: str(int(y)) if pd.notna(y) else None), values["diagnosis_year"])
    age = year.to_numpy(dtype="float64") - people["birth_year"].to_numpy(dtype="float64")
    patients["age_band"] = _categorical(_age_band(pd.Series(age)), values["age_band"])
    markers = _biomarker_dicts(first["biomarkers"])
    for name in BIOMARKERS:
        value = markers.map(lambda m, n=name: m.get(n))
        value = value.map(lambda v: str(v).strip().upper()[:16] if v is not None else None)
        patients[biomarker_column(name)] = value.astype("category")

    # Treatment lines, ranked per patient by line number.
    lines = own(_read("treatmentline", ["id", "patient_id", "status", "line_no", "regimen_id"]))
    lines = lines.sort_values(["pidx", "line_no", "id"])
    lines["line_rank"] = lines.groupby("pidx").cumcount().to_numpy() + 1
    regimen = lines["regimen_id"].map(lambda c: code_of.get(int(c)) if pd.notna(c) else None)
    lines["regimen"] = _categorical(regimen, values["regimen"])
    patients["line_count"] = np.bincount(lines["pidx"].to_numpy(dtype=np.int64),
                                         minlength=len(patients)).astype(np.int16)
    counted = lines[lines["line_rank"] <= MAX_LINES_COUNTED].set_index("id")

    cycles = own(_read("cycle", ["id", "patient_id", "line_id", "status", "cycle_no"]))
    cycles = cycles[cycles["line_id"].isin(counted.index)]
    cycles["regimen"] = pd.Categorical.from_codes(
        counted["regimen"].cat.codes.reindex(cycles["line_id"].to_numpy()).to_numpy(),
        categories=list(values["regimen"]))
    cycles["cycle_no"] = cycles["cycle_no"].astype(np.int16)

    events = own(_read("adverseevent", ["id", "patient_id", "status", "ae_id", "grade",
                                        "cycle_id"]))
    events = events[events["cycle_id"].isin(cycles["id"]) & events["ae_id"].notna()]
    events["term"] = pd.Categorical(events["ae_id"].map(lambda c: code_of.get(int(c))),
                                    categories=list(terms))
    events = (events.groupby(["cycle_id", "term"], observed=True)["grade"].max()
              .rename("max_grade").reset_index())
    by_cycle = cycles.set_index("id")
    cycle_ids = events["cycle_id"].to_numpy()
    adverse_events = pd.DataFrame({
        "pidx": by_cycle["pidx"].reindex(cycle_ids).to_numpy(),
        "regimen": pd.Categorical.from_codes(
            by_cycle["regimen"].cat.codes.reindex(cycle_ids).to_numpy(),
            categories=list(values["regimen"])),
        "cycle_no": by_cycle["cycle_no"].reindex(cycle_ids).to_numpy(),
        "term": events["term"].array,
        "max_grade": events["max_grade"].astype(np.int8).to_numpy(),
    })
    # Two lines of one regimen make one (patient, regimen) pair: its cycles and events merge.
    adverse_events = (adverse_events.groupby(["pidx", "regimen", "cycle_no", "term"],
                                             observed=True)["max_grade"].max().reset_index())
    regimen_units = (lines.loc[lines["line_rank"] <= MAX_LINES_COUNTED, ["pidx", "regimen"]]
                     .drop_duplicates().reset_index(drop=True))
    # Each cycle and event knows the row of its (patient, regimen) pair, and each event the row
    # of its cycle, so a query marks them by scattering flags instead of matching keys.
    cycle_units = (cycles[["pidx", "regimen", "cycle_no"]].drop_duplicates()
                   .reset_index(drop=True))
    cycle_units["regimen_row"] = _rows_of(cycle_units, regimen_units, ["pidx", "regimen"])
    adverse_events["cycle_row"] = _rows_of(adverse_events, cycle_units,
                                           ["pidx", "regimen", "cycle_no"])
    adverse_events["regimen_row"] = cycle_units["regimen_row"].to_numpy()[
        adverse_events["cycle_row"].to_numpy()]

    labs = own(_read("labresult", ["id", "patient_id", "status", "lab_id", "collected_date",
                                   "value_canonical", "canonical_unit_id"]))
    labs = labs[labs["lab_id"].notna() & labs["value_canonical"].notna()]
    labs = labs.sort_values(["pidx", "lab_id", "collected_date", "id"]).drop_duplicates(
        ["pidx", "lab_id"], keep="last")
    labs = pd.DataFrame({
        "pidx": labs["pidx"].to_numpy(),
        "lab": pd.Categorical(labs["lab_id"].map(lambda c: code_of.get(int(c))),
                              categories=list(lab_codes)),
        "value": labs["value_canonical"].astype("float64").to_numpy(),
        "unit": labs["canonical_unit_id"].map(
            lambda c: code_of.get(int(c)) if pd.notna(c) else None).astype("category")
        .to_numpy(),
    })

    return Snapshot(
        patients=patients,
        lines=lines[["pidx", "patient_id", "line_no", "line_rank", "regimen"]]
        .reset_index(drop=True),
        regimens=regimen_units,
        cycles=cycle_units,
        adverse_events=adverse_events, labs=labs, values=values, terms=terms,
        lab_codes=lab_codes, snapshot_at=snapshot_at, built_at=_clock())


# -- the process's current snapshot ---------------------------------------------------------------

_clock = time.monotonic
_lock = threading.Lock()
_current: Snapshot | None = None


def _fresh(snapshot: Snapshot | None) -> bool:
    return snapshot is not None and (
        _clock() - snapshot.built_at < settings.PARTNER_SNAPSHOT_MAX_AGE_SECONDS)


def partner_snapshot() -> Snapshot:
    """The current snapshot, rebuilt first when it is older than the setting allows. One
    rebuild at a time: while one runs, other requests answer from the previous snapshot (only
    the very first requests of a process wait for it)."""
    global _current
    current = _current
    if _fresh(current):
        return current
    if not _lock.acquire(blocking=current is None):
        return current  # another thread is rebuilding
    try:
        if not _fresh(_current):
            _current = snapshot_build()
        return _current
    finally:
        _lock.release()


def snapshot_reset() -> None:
    """Forget the current snapshot (the next query rebuilds it)."""
    global _current
    with _lock:
        _current = None
