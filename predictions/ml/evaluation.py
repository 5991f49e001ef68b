"""Discrimination and calibration metrics, grouped (leave-site-out) and ordinary
cross-validation, and recalibration fitted without leakage.

Definitions (docs/risk-models.md):
- AUROC with a bootstrap 95% interval (percentile; resampling patients when `clusters` is
  given, else cycles), AUPRC (average precision), Brier score.
- Calibration-in-the-large: the intercept a of logit P(y=1) = a + logit(p) (slope fixed at 1);
  weak calibration: intercept and slope of logit P(y=1) = a + b logit(p), fitted by maximum
  likelihood (Newton-Raphson, no penalty).
- E-avg: the integrated calibration index, mean |smoothed observed - predicted| over the
  predictions, the observed risk smoothed by a logistic regression of y on a cubic B-spline
  (sklearn SplineTransformer, 5 knots at quantiles) of logit(p). ECE is also given: the
  binned version (10 equal-count bins, |observed - mean predicted| weighted by bin size).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy.special import expit, logit
from sklearn.base import clone
from sklearn.calibration import calibration_curve
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from sklearn.model_selection import GroupKFold, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import SplineTransformer

_EPS = 1e-6


def _logit(p) -> np.ndarray:
    return logit(np.clip(np.asarray(p, dtype=float), _EPS, 1 - _EPS))


# --- Discrimination ---------------------------------------------------------------------------

def weighted_auroc(y, p, weights) -> float:
    """AUROC with sample weights (ties count one half); equals
    roc_auc_score(y, p, sample_weight=weights), in O(n) once `p` is sorted."""
    y = np.asarray(y, dtype=bool)
    order = np.argsort(p, kind="mergesort")
    _, group = np.unique(np.asarray(p)[order], return_inverse=True)
    return _auroc_sorted(y[order], group, np.asarray(weights, dtype=float)[order])


def _auroc_sorted(y_sorted, group, w_sorted) -> float:
    pos = np.bincount(group, weights=w_sorted * y_sorted)
    neg = np.bincount(group, weights=w_sorted * ~y_sorted)
    below = np.cumsum(neg) - neg
    total = pos.sum() * neg.sum()
    return float((pos * (below + 0.5 * neg)).sum() / total) if total else float("nan")


def bootstrap_auroc_ci(y, p, *, n_boot: int = 300, clusters=None, level: float = 0.95,
                       random_state: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the AUROC; resamples `clusters` (e.g. patients) whole
    when given. Replicates without both classes are skipped."""
    y = np.asarray(y, dtype=bool)
    p = np.asarray(p, dtype=float)
    rng = np.random.default_rng(random_state)
    order = np.argsort(p, kind="mergesort")
    _, group = np.unique(p[order], return_inverse=True)
    y_sorted = y[order]
    if clusters is None:
        unit = np.arange(len(y))
    else:
        _, unit = np.unique(np.asarray(clusters), return_inverse=True)
    unit_sorted = unit[order]
    n_units = unit.max() + 1 if len(unit) else 0
    values = []
    for _ in range(n_boot):
        counts = np.bincount(rng.integers(0, n_units, n_units), minlength=n_units)
        w = counts[unit_sorted].astype(float)
        if (w * y_sorted).sum() and (w * ~y_sorted).sum():
            values.append(_auroc_sorted(y_sorted, group, w))
    if not values:
        return (float("nan"), float("nan"))
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return (float(lo), float(hi))


# --- Calibration ------------------------------------------------------------------------------

def calibration_in_the_large(y, p, *, iterations: int = 50) -> float:
    """The intercept a of logit P(y=1) = a + logit(p) with the slope fixed at 1 (0: the mean
    predicted risk matches the observed rate)."""
    y = np.asarray(y, dtype=float)
    offset = _logit(p)
    a = 0.0
    for _ in range(iterations):
        mu = expit(a + offset)
        step = (y - mu).sum() / max((mu * (1 - mu)).sum(), 1e-12)
        a += step
        if abs(step) < 1e-10:
            break
    return float(a)


def calibration_intercept_slope(y, p, *, iterations: int = 100) -> tuple[float, float]:
    """(a, b) of logit P(y=1) = a + b logit(p), unpenalised maximum likelihood (Newton-Raphson).
    Ideal: (0, 1); b < 1 means predictions too extreme."""
    y = np.asarray(y, dtype=float)
    X = np.column_stack([np.ones(len(y)), _logit(p)])
    beta = np.array([0.0, 1.0])
    for _ in range(iterations):
        mu = expit(X @ beta)
        w = mu * (1 - mu)
        hessian = X.T @ (X * w[:, None]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(hessian, X.T @ (y - mu))
        beta += step
        if np.abs(step).max() < 1e-10:
            break
    return float(beta[0]), float(beta[1])


def smoothed_observed(y, p, *, n_knots: int = 5) -> np.ndarray:
    """The observed risk as a smooth function of the prediction: logistic regression of y on a
    cubic spline of logit(p) (nearly unpenalised)."""
    lp = _logit(p).reshape(-1, 1)
    if np.ptp(lp) < 1e-9:
        return np.full(len(lp), float(np.mean(y)))
    smoother = make_pipeline(SplineTransformer(n_knots=n_knots, degree=3, knots="quantile",
                                               extrapolation="linear"),
                             LogisticRegression(C=1e4, max_iter=5000))
    smoother.fit(lp, np.asarray(y, dtype=int))
    return smoother.predict_proba(lp)[:, 1]


def e_avg(y, p) -> float:
    """Integrated calibration index: mean |smoothed observed - predicted|."""
    p = np.asarray(p, dtype=float)
    return float(np.mean(np.abs(smoothed_observed(y, p) - p)))


def ece(y, p, *, n_bins: int = 10) -> float:
    """Expected calibration error over equal-count bins of the prediction."""
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    order = np.argsort(p, kind="mergesort")
    total = 0.0
    for chunk in np.array_split(order, n_bins):
        if len(chunk):
            total += len(chunk) * abs(y[chunk].mean() - p[chunk].mean())
    return float(total / len(p))


def calibration_points(y, p, *, n_bins: int = 10) -> list[dict]:
    """Calibration curve: per quantile bin, mean predicted and observed rate."""
    observed, predicted = calibration_curve(np.asarray(y, dtype=int), np.asarray(p, dtype=float),
                                            n_bins=n_bins, strategy="quantile")
    return [{"predicted": float(a), "observed": float(b)}
            for a, b in zip(predicted, observed, strict=True)]


def metrics(y, p, *, n_boot: int = 300, clusters=None, random_state: int = 0) -> dict:
    """Every metric of one set of predictions (JSON-ready floats)."""
    y = np.asarray(y, dtype=int)
    p = np.asarray(p, dtype=float)
    intercept, slope = calibration_intercept_slope(y, p)
    lo, hi = bootstrap_auroc_ci(y, p, n_boot=n_boot, clusters=clusters,
                                random_state=random_state)
    return {
        "auroc": float(roc_auc_score(y, p)),
        "auroc_ci": [lo, hi],
        "auprc": float(average_precision_score(y, p)),
        "brier": float(brier_score_loss(y, p)),
        "brier_base_rate": float(brier_score_loss(y, np.full(len(y), y.mean()))),
        "calibration_in_the_large": calibration_in_the_large(y, p),
        "calibration_intercept": intercept,
        "calibration_slope": slope,
        "e_avg": e_avg(y, p),
        "ece": ece(y, p),
        "mean_predicted": float(p.mean()),
        "observed_rate": float(y.mean()),
    }


# --- Folds ------------------------------------------------------------------------------------

def site_folds(groups, y, *, min_events: int = 30) -> np.ndarray:
    """A fold label per row for leave-one-site-out CV: a site with at least `min_events` events
    is its own fold; smaller sites are pooled, in order of site code, into folds of at least
    `min_events` events (a remainder short of it joins the last pool, or the smallest own-fold
    site when there is no pool). Deterministic; labels are site codes joined by '+'."""
    frame = pd.DataFrame({"site": np.asarray(groups).astype(str), "y": np.asarray(y, int)})
    events = frame.groupby("site")["y"].sum().sort_index()
    label = {s: s for s in events.index[events >= min_events]}
    pools: list[list[str]] = []
    current: list[str] = []
    count = 0
    for site in events.index[events < min_events]:
        current.append(site)
        count += events[site]
        if count >= min_events:
            pools.append(current)
            current, count = [], 0
    if current:
        if pools:
            pools[-1].extend(current)
        elif label:
            smallest = min(label, key=lambda s: (events[s], s))
            for site in current:
                label[site] = smallest
        else:
            pools.append(current)
    for pool in pools:
        for site in pool:
            label[site] = "+".join(pool)
    # A site merged into an own-fold site renames that fold to the whole set.
    members: dict[str, list[str]] = {}
    for site, fold in label.items():
        members.setdefault(fold, []).append(site)
    names = {fold: "+".join(sorted(sites)) for fold, sites in members.items()}
    return frame["site"].map(lambda s: names[label[s]]).to_numpy()


def _split_indices(folds: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(np.nonzero(folds != f)[0], np.nonzero(folds == f)[0])
            for f in sorted(set(folds))]


# --- Cross-validated predictions --------------------------------------------------------------

def fit_recalibrator(p, y, method: str):
    """A monotone map of predicted risk fitted on (p, y) the model did not train on."""
    if method == "isotonic":
        return IsotonicRegression(y_min=_EPS, y_max=1 - _EPS, out_of_bounds="clip").fit(p, y)
    if method == "sigmoid":
        return _Sigmoid().fit(p, y)
    raise ValueError(f"Unknown recalibration method {method!r}.")


class _Sigmoid:
    """Platt scaling on logit(p): p' = expit(a + b logit(p))."""

    def fit(self, p, y):
        self.intercept_, self.slope_ = calibration_intercept_slope(y, p)
        return self

    def predict(self, p):
        return expit(self.intercept_ + self.slope_ * _logit(p))


def cross_val_predict_grouped(pipeline, X: pd.DataFrame, y, folds, *,
                              progress: Callable[[str], None] | None = None) -> np.ndarray:
    """Out-of-fold predictions: each fold (label in `folds`) predicted by the pipeline fitted
    on the other folds."""
    y = np.asarray(y, dtype=int)
    raw = np.full(len(y), np.nan)
    splits = _split_indices(np.asarray(folds))
    for number, (train, test) in enumerate(splits, 1):
        model = clone(pipeline).fit(X.iloc[train], y[train])
        raw[test] = model.predict_proba(X.iloc[test])[:, 1]
        if progress:
            progress(f"fold {number}/{len(splits)}")
    return raw


def recalibrated_predictions(pipeline, X: pd.DataFrame, y, folds, raw, *, method: str,
                             inner_groups=None, inner_splits: int = 3,
                             progress: Callable[[str], None] | None = None) -> np.ndarray:
    """The out-of-fold predictions `raw` through a recalibrator fitted inside each fold's
    training part: there the pipeline gets inner out-of-fold predictions (GroupKFold on
    `inner_groups`, default the fold labels) and the recalibrator is fitted on those. The
    held-out labels never touch the model or its recalibrator."""
    y = np.asarray(y, dtype=int)
    folds = np.asarray(folds)
    inner_groups = folds if inner_groups is None else np.asarray(inner_groups)
    out = np.full(len(y), np.nan)
    splits = _split_indices(folds)
    for number, (train, test) in enumerate(splits, 1):
        inner = _inner_predictions(pipeline, X.iloc[train], y[train], inner_groups[train],
                                   inner_splits)
        out[test] = fit_recalibrator(inner, y[train], method).predict(np.asarray(raw)[test])
        if progress:
            progress(f"recalibration fold {number}/{len(splits)}")
    return out


def _inner_predictions(pipeline, X, y, groups, n_splits: int) -> np.ndarray:
    n_splits = min(n_splits, len(set(groups)))
    if n_splits < 2:  # a single site: fall back to stratified folds within it
        splitter = StratifiedKFold(n_splits=3, shuffle=True, random_state=0).split(X, y)
    else:
        splitter = GroupKFold(n_splits=n_splits).split(X, y, groups)
    out = np.full(len(y), np.nan)
    for train, test in splitter:
        out[test] = clone(pipeline).fit(X.iloc[train], y[train]).predict_proba(X.iloc[test])[:, 1]
    return out


def ordinary_cv_predict(pipeline, X: pd.DataFrame, y, *, n_splits: int = 5,
                        random_state: int = 0) -> np.ndarray:
    """Out-of-fold predictions of stratified K-fold ignoring sites (what ordinary
    cross-validation would claim)."""
    y = np.asarray(y, dtype=int)
    folds = np.empty(len(y), dtype=object)
    splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
    for k, (_, test) in enumerate(splitter.split(X, y)):
        folds[test] = f"k{k}"
    return cross_val_predict_grouped(pipeline, X, y, folds)


def per_site(y, p, sites, *, min_events: int = 30, n_boot: int = 300, clusters=None,
             random_state: int = 0) -> list[dict]:
    """Per site (held-out predictions): cycles, events, and AUROC with its bootstrap interval
    when the site has at least `min_events` events (else null)."""
    y = np.asarray(y, dtype=int)
    p = np.asarray(p, dtype=float)
    sites = np.asarray(sites).astype(str)
    clusters = None if clusters is None else np.asarray(clusters)
    rows = []
    for site in sorted(set(sites)):
        at = sites == site
        events = int(y[at].sum())
        row = {"site": site, "cycles": int(at.sum()), "events": events, "auroc": None,
               "ci": None}
        if events >= min_events and events < at.sum():
            row["auroc"] = float(roc_auc_score(y[at], p[at]))
            lo, hi = bootstrap_auroc_ci(y[at], p[at], n_boot=n_boot,
                                        clusters=None if clusters is None else clusters[at],
                                        random_state=random_state)
            row["ci"] = [lo, hi]
        rows.append(row)
    return rows
