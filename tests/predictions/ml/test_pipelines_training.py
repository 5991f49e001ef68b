"""Candidate pipelines follow scikit-learn's conventions; training chooses and summarises a
champion; artifacts refuse a changed file; explanations name the factors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from predictions.ml import definitions as d
from predictions.ml import pipelines
from predictions.ml import training as t
from predictions.ml.features import build_features
from tests.predictions.ml import cohort


@pytest.fixture(scope="module")
def feature_set():
    return build_features(cohort.frames(700, seed=11, sites=5))


@pytest.mark.parametrize("algorithm", list(pipelines.CANDIDATES))
@pytest.mark.parametrize("model", list(d.DEFINITIONS))
def test_candidates_follow_sklearn_conventions(feature_set, algorithm, model):
    definition = d.DEFINITIONS[model]
    X, y, _ = feature_set.matrix(definition)
    pipeline = pipelines.build(algorithm, definition, random_state=7)
    params = pipeline.get_params()
    twin = clone(pipeline)
    assert twin.get_params().keys() == params.keys()
    assert not hasattr(twin.steps[-1][1], "classes_")  # clone is unfitted
    assert pipeline.fit(X, y) is pipeline
    p = pipeline.predict_proba(X)[:, 1]
    assert p.shape == (len(X),) and np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()
    # Same random_state, same data: same predictions.
    np.testing.assert_array_equal(clone(pipeline).fit(X, y).predict_proba(X)[:, 1], p)
    # Unseen categories and missing values at prediction time are handled.
    odd = X.head(3).copy()
    odd[definition.categorical_features[0]] = "never-seen"
    odd[definition.numeric_features[0]] = np.nan
    assert np.isfinite(pipeline.predict_proba(odd)[:, 1]).all()


def test_quantile_binner_is_an_estimator():
    binner = pipelines.QuantileBinner(n_bins=4)
    assert clone(binner).get_params() == {"n_bins": 4}
    X = np.array([[1.0], [2.0], [3.0], [4.0], [np.nan]])
    codes = binner.fit(X).transform(X)
    assert codes[:, 0].tolist() == [0, 1, 2, 3, 4]  # missing gets the reserved code n_bins
    assert (codes >= 0).all()


@pytest.fixture(scope="module")
def trained(feature_set):
    X, y, groups = feature_set.matrix(d.NEUTROPENIA)
    seen = []
    result = t.train(d.NEUTROPENIA, X, y, groups, meta=feature_set.meta, n_boot=50,
                     min_fold_events=20, progress=lambda f, m: seen.append((f, m)))
    return result, seen, (X, y, groups)


def test_training_chooses_a_champion_and_summarises_it_as_json(trained):
    result, seen, (X, y, groups) = trained
    summary = json.loads(json.dumps(result.summary(), allow_nan=False))
    assert summary["risk_model"] == "neutropenia"
    assert summary["cycles"] == len(X) and summary["events"] == int(y.sum())
    champion = summary["champion"]
    for key in ("algorithm", "version", "loso_auroc", "loso_auroc_ci", "brier",
                "calibration_slope", "calibration_intercept", "e_avg"):
        assert key in champion
    assert [c["algorithm"] for c in summary["candidates"]] == list(pipelines.CANDIDATES)
    best = max(c["loso_auroc"] for c in summary["candidates"])
    assert champion["loso_auroc"] == pytest.approx(best, abs=1e-4)
    assert champion["loso_auroc"] > 0.65  # the cohort's signal is found
    lo, hi = champion["loso_auroc_ci"]
    assert lo < champion["loso_auroc"] < hi
    assert {s["site"] for s in summary["per_site"]} == set(groups)
    assert sum(s["events"] for s in summary["per_site"]) == int(y.sum())
    assert summary["snapshot"]["patients"] == 700
    assert summary["snapshot"]["cycles"] == len(X)
    assert len(summary["fingerprint"]) == 64
    assert (result.model.recalibrator is None) == (result.champion.recalibration is None)
    assert seen[-1] == (1.0, "neutropenia: done")
    assert all(0 <= f <= 1 for f, _ in seen)


def test_fingerprint_changes_with_the_data_and_not_with_row_order(trained):
    _, _, (X, y, groups) = trained
    base = t.fingerprint(X, y, groups)
    order = np.random.default_rng(0).permutation(len(X))
    assert t.fingerprint(X.iloc[order], np.asarray(y)[order], np.asarray(groups)[order]) == base
    changed = X.copy()
    changed.iloc[0, 0] = changed.iloc[0, 0] + 1
    assert t.fingerprint(changed, y, groups) != base


def test_artifact_round_trip_and_refusal_of_a_changed_file(trained):
    result, _, (X, _, _) = trained
    data, sha = t.artifact_dumps(result.model)
    loaded = t.artifact_loads(data, sha)
    np.testing.assert_array_equal(loaded.predict_proba(X), result.model.predict_proba(X))
    tampered = data[:-1] + bytes([data[-1] ^ 1])
    with pytest.raises(t.ArtifactIntegrityError, match="SHA-256"):
        t.artifact_loads(tampered, sha)
    with pytest.raises(t.ArtifactIntegrityError):
        t.artifact_loads(data, "0" * 64)


def test_explain_names_the_factors_that_move_one_prediction(feature_set):
    X, y, groups = feature_set.matrix(d.NEUTROPENIA)
    result = t.train(d.NEUTROPENIA, X, y, groups, candidates=["logistic_regression"],
                     n_boot=20, min_fold_events=20, ordinary_cv=False)
    row = X[(X["prev_cycle_neutropenia"] == 1) & (X["gcsf_planned"] == 0)].iloc[[0]]
    factors = t.explain(result.model, row, top=5)
    assert 1 <= len(factors) <= 5
    by_name = {f["feature"]: f for f in factors}
    assert by_name["prev_cycle_neutropenia"]["direction"] == "raises"
    assert by_name["prev_cycle_neutropenia"]["value"] == 1.0
    contributions = [abs(f["contribution"]) for f in factors]
    assert contributions == sorted(contributions, reverse=True)
    json.dumps(factors)
    assert json.loads(json.dumps(result.summary(), allow_nan=False))["candidates"][0][
        "ordinary_cv_auroc"] is None  # not computed: null, not NaN


def test_training_without_both_classes_is_refused(feature_set):
    X, _, groups = feature_set.matrix(d.CINV)
    with pytest.raises(ValueError, match="with and without"):
        t.train(d.CINV, X, pd.Series(0, index=X.index), groups)
