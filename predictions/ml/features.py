"""The per-cycle feature matrix and targets, built set-based from the registry's frames.

Inputs are frames shaped like the bulk reader's output (registry/selectors/bulk.py), with the
concept ids already replaced by their codes (see FRAME_COLUMNS; extra columns are ignored).
Dates may be any pandas datetime dtype.

The rule against leakage: a cycle's features read only what is dated strictly before the
cycle's start date (diagnoses, labs, adverse events, earlier cycles), plus what the cycle
itself plans at its start: its regimen and number, and its prophylaxis (antiemetics on day 1,
G-CSF on days 1-3, see definitions.GCSF_PLANNED_DAYS). One opt-in exception, `same_day_labs`:
labs collected on the start date, read as the pre-treatment blood count.

The targets read the cycle's own adverse events: those linked to it, or unlinked ones with
onset from its start until the patient's next cycle starts (or its planned length, 21 days
when unknown, for the last).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from predictions.ml import definitions as d
from predictions.ml import vocabulary as v

FRAME_COLUMNS: dict[str, tuple[str, ...]] = {
    "cycles": ("id", "patient_id", "line_id", "cycle_no", "start_date", "length_days", "site"),
    "lines": ("id", "line_no", "regimen_code"),
    "patients": ("id", "sex", "birth_year"),
    "diagnoses": ("patient_id", "diagnosis_date", "cancer_code", "stage_group", "ecog"),
    "drugs": ("cycle_id", "day", "drug_code", "purpose"),
    "adverse_events": ("patient_id", "cycle_id", "ae_code", "grade", "onset_date"),
    "labs": ("patient_id", "lab_code", "value_canonical", "collected_date"),
}

DEFAULT_CYCLE_DAYS = 21
# Pre-cycle labs are the latest collected at most this many days before the cycle's start:
# the blood count that clears a patient for the cycle. Older values belong to the previous
# cycle (its nadir is drawn on days 10-12, 3 or more days before a 14-day cycle's successor)
# and mixing them in as a "baseline" blurs the baseline's meaning.
LAB_LOOKBACK_DAYS = 2
# LOINC code -> feature name (values in the canonical unit of the vocabulary).
LAB_FEATURES = {
    "751-8": "anc",
    "6690-2": "wbc",
    "777-3": "platelets",
    "718-7": "hemoglobin",
    "1742-6": "alt",
}
UNKNOWN = "unknown"
META_COLUMNS = ("patient_id", "line_id", "start_date", "site")


@dataclass
class FeatureSet:
    """Every feature of every risk model, its targets and the cycle's identity, one row per
    cycle, indexed by cycle id (ascending)."""

    features: pd.DataFrame
    targets: pd.DataFrame  # y_<model name>, 0/1
    meta: pd.DataFrame  # patient_id, line_id, start_date, site

    def matrix(self, model: str | d.RiskModelDefinition
               ) -> tuple[pd.DataFrame, pd.Series, pd.Series]:
        """(X, y, groups) of one risk model: its feature columns, its target, the site."""
        definition = d.definition(model)
        return (self.features[list(definition.features)].copy(),
                self.targets[definition.target_column].rename(definition.target_column),
                self.meta["site"].rename("site"))


def _dates(series: pd.Series) -> pd.Series:
    return pd.to_datetime(series).astype("datetime64[ns]")


def _check(frames: dict[str, pd.DataFrame]) -> None:
    for name, columns in FRAME_COLUMNS.items():
        if name not in frames:
            raise ValueError(f"Frame {name!r} is missing.")
        absent = [c for c in columns if c not in frames[name].columns]
        if absent:
            raise ValueError(f"Frame {name!r} lacks column(s) {', '.join(absent)}.")


def _asof_before(left: pd.DataFrame, on: str, right: pd.DataFrame, right_on: str,
                 values: list[str], *, same_day: bool = False) -> pd.DataFrame:
    """For each row of `left` (keeping its index), the latest row of `right` of the same patient
    dated strictly before left[on] (on or before it with `same_day`); rows without such a row
    get NaN."""
    keyed = left[["patient_id", on]].dropna().sort_values(on, kind="stable")
    right = right.dropna(subset=[right_on]).sort_values(right_on, kind="stable")
    keyed["_row"] = keyed.index
    merged = pd.merge_asof(keyed, right[["patient_id", right_on, *values]], left_on=on,
                           right_on=right_on, by="patient_id", allow_exact_matches=same_day,
                           direction="backward")
    return merged.set_index("_row")[[right_on, *values]].reindex(left.index)


def _cumulative_before(cycles: pd.DataFrame, on: str, events: pd.DataFrame) -> pd.Series:
    """How many of the patient's `events` (patient_id, onset_date) have onset strictly before
    cycles[on]."""
    ev = events[["patient_id", "onset_date"]].dropna().sort_values(
        ["patient_id", "onset_date"], kind="stable")
    ev["_count"] = ev.groupby("patient_id").cumcount() + 1
    found = _asof_before(cycles, on, ev, "onset_date", ["_count"])["_count"]
    return found.fillna(0).astype(int)


def _stage(stage: pd.Series) -> pd.Series:
    """Stage group coarsened to its main group (IVA -> IV, BCLC C stays), unknown when blank."""
    text = stage.fillna("").astype(str).str.strip().str.upper()
    roman = text.str.extract(r"^(IV|III|II|I|0)", expand=False)
    coarse = roman.where(roman.notna(), text)
    return coarse.where(coarse != "", UNKNOWN)


def _prepared(frames: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The columns each frame needs, with a fresh index and uniform key dtypes (nullable
    integers from the bulk reader become int64 or float)."""
    _check(frames)
    ready = {}
    for name, columns in FRAME_COLUMNS.items():
        frame = frames[name][list(columns)].reset_index(drop=True)
        for key in ("id", "patient_id", "line_id"):
            if key in frame.columns:
                frame[key] = frame[key].astype("int64")
        if "cycle_id" in frame.columns:
            frame["cycle_id"] = frame["cycle_id"].astype("float64")
        ready[name] = frame
    return ready


def build_features(frames: dict[str, pd.DataFrame], *, same_day_labs: bool = False
                   ) -> FeatureSet:
    """The feature set of every cycle in frames["cycles"] (see the module docstring).

    `same_day_labs` also reads labs collected on the cycle's start date, as pre-treatment labs
    (the day-1 blood count drawn before the infusion). Off by default: dates carry no time, so
    the strict rule is the one that provably reads nothing from the cycle's start onwards."""
    frames = _prepared(frames)
    cyc = frames["cycles"][list(FRAME_COLUMNS["cycles"])].copy()
    cyc["start_date"] = _dates(cyc["start_date"])
    lines = frames["lines"][list(FRAME_COLUMNS["lines"])].rename(columns={"id": "line_id"})
    cyc = cyc.merge(lines, on="line_id", how="left", validate="many_to_one")
    cyc = cyc.sort_values(["patient_id", "start_date", "line_no", "cycle_no", "id"],
                          kind="stable").reset_index(drop=True)
    out = pd.DataFrame(index=cyc.index)
    by_patient = cyc.groupby("patient_id", sort=False)

    # The cycle's place in the patient's treatment.
    out["cycle_no"] = cyc["cycle_no"].astype(float)
    out["line_no"] = cyc["line_no"].astype(float)
    out["patient_cycle_index"] = by_patient.cumcount().astype(float)
    out["first_cycle"] = (out["patient_cycle_index"] == 0).astype(float)
    cyc["prev_start"] = by_patient["start_date"].shift(1)
    next_start = by_patient["start_date"].shift(-1)
    out["days_since_last_cycle"] = (cyc["start_date"] - cyc["prev_start"]).dt.days.astype(float)
    length = pd.to_numeric(cyc["length_days"], errors="coerce").fillna(DEFAULT_CYCLE_DAYS)
    planned_end = cyc["start_date"] + pd.to_timedelta(length.astype(int), unit="D")
    cyc["window_end"] = next_start.where(next_start.notna(), planned_end)

    # The patient, and the latest diagnosis dated before the cycle.
    patients = frames["patients"][list(FRAME_COLUMNS["patients"])].rename(
        columns={"id": "patient_id"})
    pat = cyc[["patient_id"]].merge(patients, on="patient_id", how="left",
                                    validate="many_to_one")
    pat.index = cyc.index
    out["female"] = (pat["sex"] == "F").astype(float).where(pat["sex"].notna())
    birth = pd.to_numeric(pat["birth_year"], errors="coerce").astype(float)
    out["age"] = cyc["start_date"].dt.year.astype(float) - birth
    out["age_under_50"] = (out["age"] < 50).astype(float).where(out["age"].notna())
    out["age_65_plus"] = (out["age"] >= 65).astype(float).where(out["age"].notna())
    diagnoses = frames["diagnoses"][list(FRAME_COLUMNS["diagnoses"])].copy()
    diagnoses["diagnosis_date"] = _dates(diagnoses["diagnosis_date"])
    diagnoses["ecog"] = pd.to_numeric(diagnoses["ecog"], errors="coerce").astype(float)
    dx = _asof_before(cyc, "start_date", diagnoses, "diagnosis_date",
                      ["cancer_code", "stage_group", "ecog"])
    cancer = dx["cancer_code"].astype(object).where(dx["cancer_code"].notna(), None)
    out["cancer"] = cancer.map(lambda c: str(c)[:3] if c else UNKNOWN)
    out["stage"] = _stage(dx["stage_group"])
    out["ecog"] = dx["ecog"].astype(float)
    out["ecog_missing"] = out["ecog"].isna().astype(float)
    out["ecog_2_plus"] = (out["ecog"] >= 2).astype(float)

    # The regimen's risk classes for this cycle (its phase), or the drugs' when unknown.
    plan = v.regimen_cycle_classes()
    planned_cycles = plan.groupby("regimen_code")["cycle_no"].max()
    regimen = cyc["regimen_code"].astype(object).where(cyc["regimen_code"].notna(), None)
    phase_no = np.minimum(cyc["cycle_no"].astype(float),
                          regimen.map(planned_cycles).astype(float))
    key = pd.DataFrame({"regimen_code": regimen, "cycle_no": phase_no})
    classes = key.merge(plan.assign(cycle_no=plan["cycle_no"].astype(float)),
                        on=["regimen_code", "cycle_no"], how="left")
    classes.index = cyc.index
    out["regimen"] = regimen.fillna(UNKNOWN)
    emeto = classes["emetogenic_class"]
    drugs = frames["drugs"][list(FRAME_COLUMNS["drugs"])].copy()
    roles = v.drug_roles()
    role = drugs["drug_code"].map(roles)
    purpose = drugs["purpose"].where(drugs["purpose"].notna() & (drugs["purpose"] != ""), role)
    chemo = drugs[purpose == "antineoplastic"].dropna(subset=["drug_code"])
    if emeto.isna().any() and len(chemo):
        drug_class = chemo["drug_code"].map(
            lambda c: v.EMETOGENIC_CLASSES.index(v.drug_emetogenic_class(c))
            if c in roles else np.nan)
        from_drugs = drug_class.groupby(chemo["cycle_id"]).max()
        fallback = cyc["id"].map(from_drugs).map(
            lambda i: v.EMETOGENIC_CLASSES[int(i)] if pd.notna(i) else None)
        emeto = emeto.where(emeto.notna(), fallback)
    out["emetogenic_class"] = emeto.fillna(UNKNOWN)
    out["emetogenic_ordinal"] = emeto.map(
        lambda k: float(v.EMETOGENIC_CLASSES.index(k)) if isinstance(k, str) else np.nan)
    fn_risk = classes["fn_risk"]
    out["fn_risk"] = fn_risk.fillna(UNKNOWN)
    out["fn_risk_ordinal"] = fn_risk.map(
        lambda k: float(v.FN_RISK_CLASSES.index(k)) if isinstance(k, str) else np.nan)

    # Prophylaxis planned for the cycle.
    day = pd.to_numeric(drugs["day"], errors="coerce")
    lo, hi = d.ANTIEMETIC_PLANNED_DAYS
    antiemetic = drugs[(purpose == "antiemetic") & day.between(lo, hi)]
    agents = antiemetic.groupby("cycle_id")["drug_code"].nunique()
    out["antiemetic_agents"] = cyc["id"].map(agents).fillna(0).astype(float)
    guideline = out["emetogenic_class"].map(d.ANTIEMETIC_GUIDELINE_AGENTS).astype(float)
    out["antiemetic_shortfall"] = (guideline - out["antiemetic_agents"]).clip(lower=0)
    out["antiemetic_inadequate"] = (out["antiemetic_shortfall"] > 0).astype(float).where(
        guideline.notna())
    lo, hi = d.GCSF_PLANNED_DAYS
    gcsf_cycles = drugs.loc[(purpose == "gcsf") & day.between(lo, hi), "cycle_id"].unique()
    out["gcsf_planned"] = cyc["id"].isin(gcsf_cycles).astype(float)

    # Adverse events: the cycle's own (targets) and the patient's earlier ones (features).
    aes = frames["adverse_events"][list(FRAME_COLUMNS["adverse_events"])].copy()
    aes["onset_date"] = _dates(aes["onset_date"])
    grade = pd.to_numeric(aes["grade"], errors="coerce")
    owner = _ae_cycles(aes, cyc)
    targets = pd.DataFrame(index=cyc.index)
    history = {"cinv": ("prev_cycle_cinv", "earlier_cinv"),
               "neutropenia": ("prev_cycle_neutropenia", "earlier_neutropenia")}
    for definition in d.DEFINITIONS.values():
        is_event = np.zeros(len(aes), dtype=bool)
        for term in definition.target_terms:
            is_event |= ((aes["ae_code"] == term.code) & (grade >= term.min_grade)).to_numpy()
        event_cycles = owner[is_event].dropna().unique()
        targets[definition.target_column] = cyc["id"].isin(event_cycles).astype(int)
        events = aes[is_event]
        before_start = _cumulative_before(cyc, "start_date", events)
        before_prev = _cumulative_before(cyc, "prev_start", events)
        prev_name, earlier_name = history[definition.name]
        has_prev = cyc["prev_start"].notna()
        out[prev_name] = ((before_start - before_prev) > 0).astype(float).where(has_prev, 0.0)
        out[earlier_name] = (before_prev > 0).astype(float).where(has_prev, 0.0)

    # The latest labs before the cycle.
    labs = frames["labs"][list(FRAME_COLUMNS["labs"])].copy()
    labs["collected_date"] = _dates(labs["collected_date"])
    labs["value_canonical"] = pd.to_numeric(labs["value_canonical"], errors="coerce")
    labs = labs.dropna(subset=["value_canonical"])
    for code, name in LAB_FEATURES.items():
        found = _asof_before(cyc, "start_date", labs[labs["lab_code"] == code],
                             "collected_date", ["value_canonical"], same_day=same_day_labs)
        age = (cyc["start_date"] - found["collected_date"]).dt.days.astype(float)
        recent = age <= LAB_LOOKBACK_DAYS
        out[name] = found["value_canonical"].astype(float).where(recent)
        out[f"{name}_days_before"] = age.where(recent)
    out["anc_missing"] = out["anc"].isna().astype(float)
    out["log_anc"] = np.log(out["anc"].clip(lower=0.05))
    out["log_wbc"] = np.log(out["wbc"].clip(lower=0.05))
    out["log_alt"] = np.log(out["alt"].clip(lower=1.0))

    index = pd.Index(cyc["id"].astype("int64"), name="cycle_id")
    out.index = targets.index = index
    meta = pd.DataFrame({"patient_id": cyc["patient_id"].to_numpy(),
                         "line_id": cyc["line_id"].to_numpy(),
                         "start_date": cyc["start_date"].to_numpy(),
                         "site": cyc["site"].astype(str).to_numpy()}, index=index)
    order = index.argsort(kind="stable")
    return FeatureSet(out.iloc[order], targets.iloc[order], meta.iloc[order])


def _ae_cycles(aes: pd.DataFrame, cyc: pd.DataFrame) -> pd.Series:
    """The cycle each adverse event belongs to: its linked cycle, else the patient's cycle whose
    window [start, next start) holds its onset; NaN when none."""
    linked = aes["cycle_id"].where(aes["cycle_id"].isin(cyc["id"]))
    unlinked = aes[linked.isna()].dropna(subset=["onset_date", "patient_id"])
    if len(unlinked):
        windows = cyc[["patient_id", "start_date", "window_end", "id"]].sort_values(
            "start_date", kind="stable")
        probe = unlinked[["patient_id", "onset_date"]].sort_values("onset_date", kind="stable")
        probe["_row"] = probe.index
        found = pd.merge_asof(probe, windows, left_on="onset_date", right_on="start_date",
                              by="patient_id", direction="backward").set_index("_row")
        inside = found["onset_date"] < found["window_end"]
        linked.loc[found.index] = found["id"].where(inside)
    return linked.astype(float)
