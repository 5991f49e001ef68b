"""Train a risk model: evaluate every candidate by leave-site-out CV, choose the champion,
fit it on all data (with its recalibrator when recalibration helped), and summarise.

`train()` is what the Django side calls; the result's `summary()` has the keys of
`train_models --json` (the version number is the caller's to fill), `model` is the fitted
predictor, and `artifact_dumps` / `artifact_loads` store it as bytes with their SHA-256.
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import joblib
import numpy as np
import pandas as pd
from scipy.special import logit
from sklearn.base import clone
from sklearn.metrics import roc_auc_score

from predictions.ml import evaluation as ev
from predictions.ml import pipelines
from predictions.ml.definitions import RiskModelDefinition
from predictions.ml.definitions import definition as get_definition

DEFAULT_CANDIDATES = tuple(pipelines.CANDIDATES)
# Each leave-site-out fold holds at least this many events (small sites are pooled).
MIN_FOLD_EVENTS = 30
# Per-site AUROC is reported for sites with at least this many events.
PER_SITE_MIN_EVENTS = 30
RECALIBRATE_ABOVE_E_AVG = 0.01
RECALIBRATE_SLOPE = (0.95, 1.05)
_EPS = 1e-6

Progress = Callable[[float, str], None]


class ArtifactIntegrityError(ValueError):
    """A stored model whose bytes do not hash to the recorded SHA-256."""


@dataclass
class RiskPredictor:
    """A fitted risk model: the pipeline, its optional recalibrator, and reference values of
    the features (for explanations)."""

    risk_model: str
    algorithm: str
    features: tuple[str, ...]
    pipeline: object
    recalibrator: object | None
    reference: dict

    def raw_proba(self, X: pd.DataFrame) -> np.ndarray:
        return self.pipeline.predict_proba(X[list(self.features)])[:, 1]

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """Calibrated probability of the event, one per row."""
        p = self.raw_proba(X)
        return self.recalibrator.predict(p) if self.recalibrator is not None else p


@dataclass
class CandidateResult:
    algorithm: str
    params: dict
    metrics: dict  # of the kept variant (raw or recalibrated), leave-site-out
    raw_metrics: dict
    recalibration: str | None  # method kept, or None
    ordinary_cv_auroc: float
    oof: np.ndarray = field(repr=False)  # held-out predictions of the kept variant
    raw_oof: np.ndarray = field(repr=False)
    seconds: float = 0.0

    def summary(self) -> dict:
        m = self.metrics
        return {
            "algorithm": self.algorithm,
            "loso_auroc": m["auroc"], "loso_auroc_ci": m["auroc_ci"], "auprc": m["auprc"],
            "brier": m["brier"], "calibration_in_the_large": m["calibration_in_the_large"],
            "calibration_slope": m["calibration_slope"],
            "calibration_intercept": m["calibration_intercept"], "e_avg": m["e_avg"],
            "ece": m["ece"], "recalibration": self.recalibration,
            "ordinary_cv_auroc": self.ordinary_cv_auroc,
            "raw_e_avg": self.raw_metrics["e_avg"], "seconds": round(self.seconds, 1),
        }


@dataclass
class TrainingResult:
    risk_model: str
    cycles: int
    events: int
    candidates: list[CandidateResult]
    champion: CandidateResult
    model: RiskPredictor
    per_site: list[dict]
    calibration_curve: list[dict]
    folds: list[dict]
    fingerprint: str
    snapshot: dict

    def summary(self) -> dict:
        """The JSON-serialisable summary (train_models --json keys; "version" is null here;
        a figure that could not be computed is null, never NaN)."""
        return _json_safe({
            "risk_model": self.risk_model,
            "cycles": self.cycles,
            "events": self.events,
            "champion": {**self.champion.summary(), "version": None},
            "candidates": [c.summary() for c in self.candidates],
            "per_site": self.per_site,
            "calibration_curve": self.calibration_curve,
            "folds": self.folds,
            "fingerprint": self.fingerprint,
            "snapshot": self.snapshot,
        })


def _json_safe(value):
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value


def fingerprint(X: pd.DataFrame, y, groups) -> str:
    """SHA-256 of the training data: rows sorted by index, columns by name, values as bytes."""
    frame = X.sort_index(axis=1).copy()
    frame["__y"] = np.asarray(y)
    frame["__group"] = np.asarray(groups).astype(str)
    frame = frame.sort_index(kind="stable")
    digest = hashlib.sha256()
    digest.update(",".join(map(str, frame.columns)).encode())
    digest.update(np.asarray(frame.index).astype("int64").tobytes())
    for name in frame.columns:
        column = frame[name]
        if pd.api.types.is_numeric_dtype(column):
            digest.update(column.to_numpy(dtype="float64", na_value=np.nan).tobytes())
        else:
            digest.update("\x1f".join(column.astype(str)).encode())
    return digest.hexdigest()


def _snapshot(X, groups, meta: pd.DataFrame | None) -> dict:
    snap = {"cycles": len(X), "sites": int(pd.Series(np.asarray(groups)).nunique()),
            "patients": None, "first_cycle": None, "last_cycle": None}
    if meta is not None:
        if "patient_id" in meta:
            snap["patients"] = int(meta["patient_id"].nunique())
        if "start_date" in meta and len(meta):
            dates = pd.to_datetime(meta["start_date"])
            snap["first_cycle"] = dates.min().date().isoformat()
            snap["last_cycle"] = dates.max().date().isoformat()
    return snap


def _reference(X: pd.DataFrame, definition: RiskModelDefinition) -> dict:
    ref = {name: float(X[name].median()) if X[name].notna().any() else float("nan")
           for name in definition.numeric_features}
    for name in definition.categorical_features:
        ref[name] = str(X[name].mode().iloc[0]) if len(X) else "unknown"
    return ref


def train(definition: RiskModelDefinition | str, X: pd.DataFrame, y, groups, *,
          candidates: Sequence[str] = DEFAULT_CANDIDATES, random_state: int = 0,
          recalibration: str = "isotonic", min_fold_events: int = MIN_FOLD_EVENTS,
          n_boot: int = 300, meta: pd.DataFrame | None = None, ordinary_cv: bool = True,
          progress: Progress | None = None) -> TrainingResult:
    """Evaluate `candidates` on (X, y) with leave-site-out CV (`groups`: the site per row),
    choose the champion (highest pooled LOSO AUROC; ties by Brier), refit it on all rows and
    return everything a version records. `meta` (patient_id, start_date per row) adds the
    patients and date range to the snapshot and makes bootstrap intervals resample patients."""
    definition = get_definition(definition)
    report = progress or (lambda fraction, message: None)
    X = X[list(definition.features)]
    y = np.asarray(y, dtype=int)
    groups = np.asarray(groups).astype(str)
    if len(np.unique(y)) < 2:
        raise ValueError("Training needs cycles with and without the event.")
    clusters = None if meta is None or "patient_id" not in meta else meta["patient_id"].to_numpy()
    folds = ev.site_folds(groups, y, min_events=min_fold_events)
    steps = len(candidates) * (2 if ordinary_cv else 1) + 1
    done = 0
    results: list[CandidateResult] = []
    for algorithm in candidates:
        started = time.perf_counter()
        pipeline = pipelines.build(algorithm, definition, random_state=random_state)

        def fold_progress(message, algorithm=algorithm, done=done):
            report(done / steps, f"{definition.name} {algorithm}: leave-site-out {message}")

        raw = ev.cross_val_predict_grouped(pipeline, X, y, folds, progress=fold_progress)
        done += 1
        raw_metrics = ev.metrics(y, raw, n_boot=n_boot, clusters=clusters,
                                 random_state=random_state)
        kept, kept_metrics, oof = None, raw_metrics, raw
        if recalibration and _needs_recalibration(raw_metrics):
            recalibrated = ev.recalibrated_predictions(
                pipeline, X, y, folds, raw, method=recalibration, inner_groups=groups,
                progress=fold_progress)
            recal_metrics = ev.metrics(y, recalibrated, n_boot=n_boot, clusters=clusters,
                                       random_state=random_state)
            # Kept only when it improves held-out calibration without hurting the Brier score.
            if (recal_metrics["e_avg"] < raw_metrics["e_avg"]
                    and recal_metrics["brier"] <= raw_metrics["brier"]):
                kept, kept_metrics, oof = recalibration, recal_metrics, recalibrated
        ordinary = float("nan")
        if ordinary_cv:
            report(done / steps, f"{definition.name} {algorithm}: ordinary cross-validation")
            ordinary_p = ev.ordinary_cv_predict(pipeline, X, y, random_state=random_state)
            ordinary = float(roc_auc_score(y, ordinary_p))
            done += 1
        results.append(CandidateResult(
            algorithm=algorithm, params=_plain_params(pipeline), metrics=kept_metrics,
            raw_metrics=raw_metrics, recalibration=kept, ordinary_cv_auroc=ordinary, oof=oof,
            raw_oof=raw,
            seconds=time.perf_counter() - started))
    champion = max(results, key=lambda r: (round(r.metrics["auroc"], 4), -r.metrics["brier"]))
    report(done / steps, f"{definition.name}: final fit of {champion.algorithm}")
    pipeline = clone(pipelines.build(champion.algorithm, definition, random_state=random_state))
    pipeline.fit(X, y)
    recalibrator = None
    if champion.recalibration:
        # Fitted on the pooled held-out predictions of the raw pipeline: data each prediction's
        # model did not train on.
        raw_oof = next(c for c in results if c is champion).raw_oof
        recalibrator = ev.fit_recalibrator(raw_oof, y, champion.recalibration)
    model = RiskPredictor(risk_model=definition.name, algorithm=champion.algorithm,
                          features=definition.features, pipeline=pipeline,
                          recalibrator=recalibrator, reference=_reference(X, definition))
    fold_rows = [{"fold": f, "cycles": int((folds == f).sum()),
                  "events": int(y[folds == f].sum())} for f in sorted(set(folds))]
    report(1.0, f"{definition.name}: done")
    return TrainingResult(
        risk_model=definition.name, cycles=len(y), events=int(y.sum()), candidates=results,
        champion=champion, model=model,
        per_site=ev.per_site(y, champion.oof, groups, min_events=PER_SITE_MIN_EVENTS,
                             n_boot=n_boot, clusters=clusters, random_state=random_state),
        calibration_curve=ev.calibration_points(y, champion.oof), folds=fold_rows,
        fingerprint=fingerprint(X, y, groups), snapshot=_snapshot(X, groups, meta))


def _needs_recalibration(m: dict) -> bool:
    """Recalibration is tried (nested, so it costs inner fits) only where held-out calibration
    leaves room: E-avg above RECALIBRATE_ABOVE_E_AVG or slope outside RECALIBRATE_SLOPE."""
    lo, hi = RECALIBRATE_SLOPE
    return m["e_avg"] > RECALIBRATE_ABOVE_E_AVG or not lo <= m["calibration_slope"] <= hi


def _plain_params(pipeline) -> dict:
    """The final estimator's parameters, JSON-friendly."""
    params = pipeline.steps[-1][1].get_params()
    return {k: (v if isinstance(v, bool | int | float | str | type(None)) else repr(v))
            for k, v in params.items()}


# --- Artifacts --------------------------------------------------------------------------------

def artifact_dumps(model: RiskPredictor) -> tuple[bytes, str]:
    """The model as bytes (joblib) and their SHA-256 hex digest."""
    buffer = io.BytesIO()
    joblib.dump(model, buffer, compress=3)
    data = buffer.getvalue()
    return data, hashlib.sha256(data).hexdigest()


def artifact_loads(data: bytes, sha256: str) -> RiskPredictor:
    """The model from its bytes, refused when they do not hash to `sha256`. Load only
    artifacts the registry wrote: unpickling runs code."""
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise ArtifactIntegrityError(
            f"Model artifact refused: its SHA-256 is {actual}, the version records {sha256}.")
    return joblib.load(io.BytesIO(data))


# --- Explanations -----------------------------------------------------------------------------

def explain(model: RiskPredictor, X_row: pd.DataFrame | pd.Series, *, top: int = 5
            ) -> list[dict]:
    """The main contributing factors of one cycle's prediction: for each feature, the change in
    the model's log-odds (before recalibration) when that feature alone is set to its training
    reference (median or most frequent value). Exact for logistic regression up to the
    reference; an occlusion approximation for the other models. Largest |contribution| first."""
    row = X_row.to_frame().T if isinstance(X_row, pd.Series) else X_row.iloc[[0]]
    row = row[list(model.features)]
    base = float(_logit1(model.raw_proba(row))[0])
    probes = pd.concat([row] * len(model.features), ignore_index=True)
    for i, name in enumerate(model.features):
        probes.loc[i, name] = model.reference[name]
    for name in model.features:
        probes[name] = probes[name].astype(row[name].dtype) if row[name].dtype != object \
            else probes[name]
    shifted = _logit1(model.raw_proba(probes))
    factors = []
    for i, name in enumerate(model.features):
        contribution = base - float(shifted[i])
        value = row[name].iloc[0]
        factors.append({
            "feature": name,
            "value": None if pd.isna(value) else (value.item() if hasattr(value, "item")
                                                  else value),
            "reference": _json_safe(model.reference[name]),
            "contribution": contribution,
            "direction": "raises" if contribution > 0 else "lowers",
        })
    factors.sort(key=lambda f: -abs(f["contribution"]))
    return [f for f in factors if abs(f["contribution"]) > 1e-9][:top]


def _logit1(p) -> np.ndarray:
    return logit(np.clip(np.asarray(p, dtype=float), _EPS, 1 - _EPS))


__all__ = [
    "ArtifactIntegrityError", "CandidateResult", "RiskPredictor", "TrainingResult",
    "artifact_dumps", "artifact_loads", "explain", "fingerprint", "train",
]
