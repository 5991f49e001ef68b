"""The feature builder: one row per cycle, targets from the cycle's own adverse events, history
from strictly earlier cycles, and nothing read from the cycle's start onwards (the leakage
test)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from predictions.ml import definitions as d
from predictions.ml.features import build_features
from tests.predictions.ml import cohort

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def frames():
    return cohort.frames(200, seed=3)


@pytest.fixture(scope="module")
def built(frames):
    return build_features(frames)


def test_importing_the_core_imports_no_django():
    code = ("import importlib, pkgutil, sys, predictions.ml as ml\n"
            "for m in pkgutil.iter_modules(ml.__path__): importlib.import_module("
            "'predictions.ml.' + m.name)\n"
            "bad = sorted(n for n in sys.modules if n == 'django' or n.startswith('django.'))\n"
            "assert not bad, bad\n"
            "print(len([n for n in sys.modules if n.startswith('predictions.ml.')]))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, check=False, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) >= 7  # every module of the package was imported


def test_one_row_per_cycle_with_every_models_features(frames, built):
    assert list(built.features.index) == sorted(frames["cycles"]["id"])
    for definition in d.DEFINITIONS.values():
        X, y, groups = built.matrix(definition)
        assert list(X.columns) == list(definition.features)
        assert len(X) == len(y) == len(groups) == len(frames["cycles"])
        assert set(y.unique()) <= {0, 1}
        for name in definition.categorical_features:
            assert X[name].map(type).eq(str).all(), name


def test_targets_are_the_cycles_own_adverse_events(frames, built):
    aes = frames["adverse_events"]
    cinv = set(aes.loc[aes["ae_code"].isin(["Nausea", "Vomiting"]) & (aes["grade"] >= 2),
                       "cycle_id"])
    neut = set(aes.loc[aes["ae_code"].eq("Neutrophil count decreased") & (aes["grade"] >= 3),
                       "cycle_id"])
    targets = built.targets
    assert set(targets.index[targets["y_cinv"] == 1]) == cinv
    assert set(targets.index[targets["y_neutropenia"] == 1]) == neut
    assert 0 < targets["y_cinv"].mean() < 1


def test_an_unlinked_event_belongs_to_the_cycle_whose_window_holds_its_onset(frames):
    changed = {k: v.copy() for k, v in frames.items()}
    cycles = changed["cycles"].sort_values(["patient_id", "start_date"])
    second = cycles[cycles.groupby("patient_id").cumcount() == 1].iloc[0]
    onset = second["start_date"] + pd.Timedelta(days=5)
    changed["adverse_events"] = pd.concat([changed["adverse_events"], pd.DataFrame([{
        "patient_id": second["patient_id"], "cycle_id": None, "ae_code": "Febrile neutropenia",
        "grade": 3, "onset_date": onset}])], ignore_index=True)
    built = build_features(changed)
    assert built.targets.loc[second["id"], "y_neutropenia"] == 1


def test_history_comes_from_the_previous_cycle_only(frames, built):
    cycles = frames["cycles"].sort_values(["patient_id", "start_date", "id"])
    previous = cycles.groupby("patient_id")["id"].shift(1)
    y = built.targets["y_cinv"]
    expected = previous.map(y).fillna(0).to_numpy()
    got = built.features.loc[cycles["id"], "prev_cycle_cinv"].to_numpy()
    np.testing.assert_array_equal(got, expected)
    first = cycles.groupby("patient_id")["id"].first()
    assert (built.features.loc[first, "first_cycle"] == 1).all()
    assert (built.features.loc[first, "earlier_cinv"] == 0).all()


def test_prophylaxis_and_labs_follow_the_stated_rules(frames, built):
    drugs = frames["drugs"]
    agents = drugs[(drugs["purpose"] == "antiemetic") & (drugs["day"] == 1)].groupby(
        "cycle_id")["drug_code"].nunique()
    np.testing.assert_array_equal(
        built.features["antiemetic_agents"].to_numpy(),
        agents.reindex(built.features.index).fillna(0).to_numpy())
    gcsf = set(drugs.loc[drugs["purpose"] == "gcsf", "cycle_id"])
    assert set(built.features.index[built.features["gcsf_planned"] == 1]) == gcsf
    # The ANC the day before the cycle, never the same cycle's nadir (day 10).
    labs = frames["labs"]
    baseline = labs[labs["collected_date"] < labs["cycle_id"].map(
        frames["cycles"].set_index("id")["start_date"])].set_index("cycle_id")["value_canonical"]
    np.testing.assert_allclose(np.exp(built.features["log_anc"]),
                               baseline.reindex(built.features.index), rtol=1e-9)
    # PEM-CIS is highly emetogenic (cisplatin) and needs three agents.
    pem = built.features["regimen"] == "REG-PEM-CIS"
    assert (built.features.loc[pem, "emetogenic_class"] == "high").all()
    assert (built.features.loc[pem, "antiemetic_shortfall"]
            == (3 - built.features.loc[pem, "antiemetic_agents"]).clip(lower=0)).all()


def _without_the_future(frames, cycle) -> dict[str, pd.DataFrame]:
    """The frames with everything dated on or after `cycle`'s start removed or changed, except
    the cycle itself and its planned prophylaxis; plus new future rows."""
    start, pid = cycle["start_date"], cycle["patient_id"]
    out = {k: v.copy() for k, v in frames.items()}
    cycles = out["cycles"]
    later = cycles[(cycles["start_date"] >= start) & (cycles["id"] != cycle["id"])]["id"]
    out["cycles"] = cycles[~cycles["id"].isin(later)]
    drugs = out["drugs"]
    out["drugs"] = drugs[~drugs["cycle_id"].isin(later)]
    aes = out["adverse_events"]
    out["adverse_events"] = pd.concat([aes[aes["onset_date"] < start], pd.DataFrame([
        {"patient_id": pid, "cycle_id": cycle["id"], "ae_code": "Nausea", "grade": 3,
         "onset_date": start},
        {"patient_id": pid, "cycle_id": None, "ae_code": "Febrile neutropenia", "grade": 4,
         "onset_date": start + pd.Timedelta(days=40)}])], ignore_index=True)
    labs = out["labs"]
    future = labs["collected_date"] >= start
    changed = labs[future].assign(value_canonical=0.05)
    out["labs"] = pd.concat([labs[~future], changed.iloc[::2], pd.DataFrame([
        {"patient_id": pid, "cycle_id": cycle["id"], "lab_code": code, "value_canonical": 0.2,
         "collected_date": start} for code in ("751-8", "6690-2", "777-3", "718-7", "1742-6")
    ])], ignore_index=True)
    # Treatment later in the cycle is not prophylaxis planned at its start.
    out["drugs"] = pd.concat([out["drugs"], pd.DataFrame([
        {"cycle_id": cycle["id"], "day": 7, "drug_code": "L03AA02", "purpose": "gcsf"},
        {"cycle_id": cycle["id"], "day": 4, "drug_code": "N05AH03", "purpose": "antiemetic"},
    ])], ignore_index=True)
    diagnoses = out["diagnoses"]
    out["diagnoses"] = pd.concat([diagnoses, pd.DataFrame([{
        "patient_id": pid, "diagnosis_date": start, "cancer_code": "C16", "stage_group": "I",
        "ecog": 4}])], ignore_index=True)
    return out


def test_leakage_nothing_dated_on_or_after_the_cycle_start_changes_its_features(frames, built):
    cycles = frames["cycles"]
    # First cycles, later cycles of a line, and cycles of second lines.
    chosen = pd.concat([cycles[cycles["cycle_no"] == 1].head(3),
                        cycles[cycles["cycle_no"] >= 3].head(6),
                        cycles[cycles["line_id"].isin(
                            frames["lines"].loc[frames["lines"]["line_no"] == 2, "id"])].head(3)])
    assert len(chosen) == 12
    for _, cycle in chosen.iterrows():
        cut = build_features(_without_the_future(frames, cycle))
        before = built.features.loc[cycle["id"]]
        after = cut.features.loc[cycle["id"]]
        pd.testing.assert_series_equal(after, before, check_names=False)


def test_same_day_labs_read_the_start_days_blood_count_and_nothing_else_of_that_day(frames):
    cycle = frames["cycles"][frames["cycles"]["cycle_no"] == 3].iloc[0]
    cut = _without_the_future(frames, cycle)  # adds labs of 0.2 dated on the start day
    strict = build_features(cut).features.loc[cycle["id"]]
    same_day = build_features(cut, same_day_labs=True)
    row = same_day.features.loc[cycle["id"]]
    assert row["log_anc"] == pytest.approx(np.log(0.2))
    assert strict["log_anc"] != pytest.approx(np.log(0.2))
    # Everything else dated on the start day (the grade-3 nausea) still is not read.
    lab_columns = {"log_anc", "anc", "anc_days_before", "anc_missing", "log_wbc", "wbc",
                   "wbc_days_before", "platelets", "platelets_days_before", "hemoglobin",
                   "hemoglobin_days_before", "log_alt", "alt", "alt_days_before"}
    others = [c for c in strict.index if c not in lab_columns]
    pd.testing.assert_series_equal(row[others], strict[others], check_names=False)


def test_the_leakage_check_would_catch_a_feature_reading_the_cycles_own_labs(frames, built):
    """The perturbation really reaches the data: the cycle's nadir is among what changes."""
    cycle = frames["cycles"][frames["cycles"]["cycle_no"] == 2].iloc[0]
    cut = _without_the_future(frames, cycle)
    own = cut["labs"][(cut["labs"]["cycle_id"] == cycle["id"])
                      & (cut["labs"]["collected_date"] >= cycle["start_date"])]
    original = frames["labs"][(frames["labs"]["cycle_id"] == cycle["id"])
                              & (frames["labs"]["collected_date"] >= cycle["start_date"])]
    assert not own["value_canonical"].sort_values().reset_index(drop=True).equals(
        original["value_canonical"].sort_values().reset_index(drop=True))
    cut_built = build_features(cut)
    assert cut_built.targets.loc[cycle["id"], "y_cinv"] == 1  # the new same-day nausea G3


def test_a_missing_frame_or_column_is_named(frames):
    with pytest.raises(ValueError, match="labs"):
        build_features({k: v for k, v in frames.items() if k != "labs"})
    broken = dict(frames, drugs=frames["drugs"].drop(columns="purpose"))
    with pytest.raises(ValueError, match="purpose"):
        build_features(broken)


def test_an_unknown_regimen_takes_its_class_from_the_cycles_drugs(frames):
    changed = {k: v.copy() for k, v in frames.items()}
    line = changed["lines"].iloc[0]
    changed["lines"].loc[changed["lines"]["id"] == line["id"], "regimen_code"] = None
    cycle_ids = changed["cycles"].loc[changed["cycles"]["line_id"] == line["id"], "id"]
    changed["drugs"] = pd.concat([changed["drugs"], pd.DataFrame(
        [{"cycle_id": c, "day": 1, "drug_code": "L01XA01", "purpose": "antineoplastic"}
         for c in cycle_ids])], ignore_index=True)
    built = build_features(changed)
    assert (built.features.loc[cycle_ids, "emetogenic_class"] == "high").all()
    assert (built.features.loc[cycle_ids, "regimen"] == "unknown").all()
    assert (built.features.loc[cycle_ids, "fn_risk"] == "unknown").all()
