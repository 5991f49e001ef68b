"""Metrics against hand-computed cases, leave-site-out folds, and recalibration without
leakage."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit
from sklearn.metrics import roc_auc_score

from predictions.ml import evaluation as ev


def test_auroc_of_a_four_point_example():
    # Pairs (positive, negative): (0.8 vs 0.1) win, (0.8 vs 0.4) win, (0.35 vs 0.1) win,
    # (0.35 vs 0.4) loss: 3 of 4.
    y, p = [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]
    assert ev.weighted_auroc(y, p, np.ones(4)) == 0.75
    assert ev.metrics(y, p, n_boot=20)["auroc"] == 0.75


def test_weighted_auroc_counts_ties_half_and_equals_sklearn_with_weights():
    assert ev.weighted_auroc([0, 1], [0.5, 0.5], [1, 1]) == 0.5
    rng = np.random.default_rng(1)
    y = rng.random(500) < 0.3
    p = np.round(rng.random(500), 2)  # many ties
    w = rng.integers(0, 4, 500)
    assert ev.weighted_auroc(y, p, w) == pytest.approx(roc_auc_score(y, p, sample_weight=w))


def test_brier_by_hand():
    m = ev.metrics([0, 1, 1, 0], [0.2, 0.6, 0.9, 0.5], n_boot=10)
    assert m["brier"] == pytest.approx((0.04 + 0.16 + 0.01 + 0.25) / 4)
    assert m["brier_base_rate"] == pytest.approx(0.25)


def _calibrated(n=200_000, seed=0):
    rng = np.random.default_rng(seed)
    p = expit(rng.normal(-1.2, 1.0, n))
    return (rng.random(n) < p).astype(int), p


def test_perfectly_calibrated_predictions_have_slope_one_intercept_zero_e_avg_zero():
    y, p = _calibrated()
    a, b = ev.calibration_intercept_slope(y, p)
    assert a == pytest.approx(0, abs=0.03)
    assert b == pytest.approx(1, abs=0.03)
    assert ev.calibration_in_the_large(y, p) == pytest.approx(0, abs=0.02)
    assert ev.e_avg(y, p) < 0.005
    assert ev.ece(y, p) < 0.01


def test_overconfident_predictions_have_slope_below_one():
    y, p = _calibrated()
    extreme = expit(2 * np.log(p / (1 - p)))
    a, b = ev.calibration_intercept_slope(y, extreme)
    assert b == pytest.approx(0.5, abs=0.02)
    assert ev.e_avg(y, extreme) > 0.05
    shifted = expit(np.log(p / (1 - p)) + 0.5)
    assert ev.calibration_in_the_large(y, shifted) == pytest.approx(-0.5, abs=0.03)


def test_ece_is_exactly_zero_when_every_bin_matches_and_known_otherwise():
    p = np.repeat([0.25, 0.75], 4)
    y = np.array([1, 0, 0, 0, 1, 1, 1, 0])
    assert ev.ece(y, p, n_bins=2) == 0.0
    assert ev.ece(np.array([0, 0, 0, 0, 1, 1, 1, 1]), p, n_bins=2) == pytest.approx(0.25)


def test_bootstrap_interval_brackets_the_estimate_and_resamples_patients():
    y, p = _calibrated(4000, seed=2)
    auc = roc_auc_score(y, p)
    lo, hi = ev.bootstrap_auroc_ci(y, p, n_boot=200)
    assert lo < auc < hi and hi - lo < 0.06
    # Clustering by patient (10 cycles each, same values) widens the interval.
    lo_c, hi_c = ev.bootstrap_auroc_ci(np.repeat(y[:400], 10), np.repeat(p[:400], 10),
                                       n_boot=200, clusters=np.repeat(np.arange(400), 10))
    lo_r, hi_r = ev.bootstrap_auroc_ci(np.repeat(y[:400], 10), np.repeat(p[:400], 10),
                                       n_boot=200)
    assert hi_c - lo_c > 1.5 * (hi_r - lo_r)
    assert ev.bootstrap_auroc_ci(y, p, n_boot=50) == ev.bootstrap_auroc_ci(y, p, n_boot=50)


def test_site_folds_hold_each_site_in_exactly_one_fold_and_pool_small_sites():
    sites = np.array(["A"] * 100 + ["B"] * 100 + ["C"] * 10 + ["D"] * 10 + ["E"] * 10)
    y = np.zeros(len(sites), dtype=int)
    y[:40] = 1  # A: 40 events
    y[100:135] = 1  # B: 35
    y[200:206] = 1  # C: 6
    y[210:216] = 1  # D: 6
    y[220:226] = 1  # E: 6
    folds = ev.site_folds(sites, y, min_events=10)
    by_site = pd.Series(folds).groupby(sites).unique()
    assert all(len(f) == 1 for f in by_site)  # one fold per site
    assert by_site["A"][0] == "A" and by_site["B"][0] == "B"
    assert by_site["C"][0] == by_site["D"][0] == by_site["E"][0] == "C+D+E"
    for fold in set(folds):
        assert y[folds == fold].sum() >= 10
    np.testing.assert_array_equal(folds, ev.site_folds(sites, y, min_events=10))
    # Each site is held out exactly once across the leave-fold-out splits.
    held = np.concatenate([test for _, test in ev._split_indices(folds)])
    assert sorted(held) == list(range(len(sites)))


def test_a_small_remainder_joins_the_smallest_site_when_no_pool_forms():
    sites = np.array(["A"] * 50 + ["B"] * 50 + ["C"] * 5)
    y = np.r_[np.ones(20), np.zeros(30), np.ones(12), np.zeros(38), np.ones(2), np.zeros(3)]
    folds = ev.site_folds(sites, y, min_events=10)
    assert set(folds) == {"A", "B+C"}


def test_recalibration_is_fitted_inside_the_training_folds_only():
    """Scrambling a held-out fold's labels changes nothing of its own predictions."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    n = 1200
    X = pd.DataFrame({"x": rng.normal(size=n)})
    y = (rng.random(n) < expit(2 * X["x"])).astype(int)
    sites = np.repeat(["A", "B", "C", "D"], n // 4)
    model = LogisticRegression(C=0.01)  # shrunk: recalibration has work to do

    def run(labels):
        raw = ev.cross_val_predict_grouped(model, X, labels, sites)
        return raw, ev.recalibrated_predictions(model, X, labels, sites, raw, method="isotonic")

    raw, recalibrated = run(y)
    scrambled = y.copy()
    scrambled[sites == "A"] = 1 - scrambled[sites == "A"]
    raw_2, recalibrated_2 = run(scrambled)
    at = sites == "A"
    np.testing.assert_array_equal(recalibrated[at], recalibrated_2[at])
    np.testing.assert_array_equal(raw[at], raw_2[at])
    assert not np.array_equal(recalibrated[~at], recalibrated_2[~at])
    assert ev.e_avg(y, recalibrated) < ev.e_avg(y, raw)


def test_per_site_reports_auroc_only_for_sites_with_enough_events():
    y, p = _calibrated(3000, seed=4)
    sites = np.where(np.arange(3000) < 2900, "BIG", "SMALL")
    rows = ev.per_site(y, p, sites, min_events=30, n_boot=50)
    big, small = rows
    assert big["site"] == "BIG" and big["auroc"] == pytest.approx(
        roc_auc_score(y[:2900], p[:2900]))
    assert big["ci"][0] < big["auroc"] < big["ci"][1]
    assert small["events"] < 30 and small["auroc"] is None and small["ci"] is None
    assert big["cycles"] + small["cycles"] == 3000
