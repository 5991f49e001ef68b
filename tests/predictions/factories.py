"""Model versions for the service and page tests without training on the database: a small
real model (trained once on the pure test cohort) and held-out predictions made up per test."""

from __future__ import annotations

import functools

import numpy as np

from predictions.ml import definitions as d
from predictions.ml.features import build_features
from predictions.ml.training import artifact_dumps, train
from predictions.services.versions import file_store, holdout_dumps, version_record
from tests.predictions.ml.cohort import frames

GOOD = {"loso_auroc": 0.75, "loso_auroc_ci": [0.7, 0.8], "brier": 0.12,
        "calibration_slope": 1.0, "calibration_intercept": 0.0, "e_avg": 0.01}


@functools.cache
def artifact(risk_model: str = "cinv") -> tuple[bytes, str]:
    feature_set = build_features(frames(200, seed=3, sites=3))
    X, y, groups = feature_set.matrix(d.definition(risk_model))
    result = train(risk_model, X, y, groups, candidates=["logistic_regression"], n_boot=10,
                   min_fold_events=5, ordinary_cv=False)
    return artifact_dumps(result.model)


def holdout(cycle_ids, y, p) -> tuple[str, str]:
    data, sha = holdout_dumps(np.asarray(cycle_ids), np.asarray(y), np.asarray(p))
    return file_store("test/holdout", data, sha, ".npy"), sha


def version(risk_model: str = "cinv", *, y, p, cycle_ids=None, metrics=None, per_site=None):
    """A recorded version whose held-out predictions are `p` for outcomes `y`."""
    cycle_ids = np.arange(1, len(y) + 1) if cycle_ids is None else cycle_ids
    data, sha = artifact(risk_model)
    holdout_name, holdout_sha = holdout(cycle_ids, y, p)
    return version_record(
        risk_model=risk_model, algorithm="logistic_regression", params={}, snapshot={
            "cycles": len(y), "patients": len(y), "sites": 2, "first_cycle": "2024-01-01",
            "last_cycle": "2024-12-31", "as_of": "2025-01-01T00:00:00+00:00"},
        fingerprint="0" * 64, cycles=len(y), events=int(np.sum(y)),
        metrics={**GOOD, **(metrics or {})}, candidates=[{**GOOD, "algorithm":
                                                         "logistic_regression", "chosen": True}],
        per_site=per_site or [], calibration_curve=[{"predicted": 0.1, "observed": 0.12},
                                                    {"predicted": 0.5, "observed": 0.45}],
        roc_curve=[{"fpr": x, "tpr": min(1.0, 1.5 * x)} for x in np.linspace(0, 1, 11)],
        folds=[], artifact=file_store(risk_model, data, sha, ".joblib"), artifact_sha256=sha,
        holdout=holdout_name, holdout_sha256=holdout_sha)


def outcomes(n: int = 400, *, seed: int = 0):
    """Outcomes and a risk that predicts them (higher `signal`, better separation)."""
    rng = np.random.default_rng(seed)
    risk = rng.uniform(0.02, 0.6, n)
    y = (rng.random(n) < risk).astype(int)
    return y, risk, rng


def predictions(y, risk, rng, *, signal: float) -> np.ndarray:
    """Held-out predictions: `signal` 1 is the true risk, 0 is noise."""
    noise = rng.uniform(0.02, 0.6, len(y))
    return np.clip(signal * risk + (1 - signal) * noise, 0.001, 0.999)
