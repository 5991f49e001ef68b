"""Scoring cycles with each risk model's champion, in sets.

Features for the cycles' sites (one COPY per record kind) -> the champion's probabilities ->
tiers and actions -> main contributing factors -> one COPY into a temporary table and one
INSERT ... ON CONFLICT into RiskScore. Scoring the same cycles twice leaves the same rows.

Factors (the occlusion explanation of predictions.ml.training.explain, computed for a whole
frame at once: one prediction per feature) are computed for every cycle scored after a save,
and in a full rescore for each patient's latest cycle only (the one the chart shows); the
other cycles keep probability, tier and action.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterable

import numpy as np
import pandas as pd
from django.db import connection, transaction
from django.utils import timezone
from scipy.special import logit

from predictions.ml.definitions import RiskModelDefinition
from predictions.ml.definitions import definition as get_definition
from predictions.ml.training import RiskPredictor
from predictions.models import Alias, ModelVersion, RiskScore
from predictions.selectors.features import feature_set_for_sites
from predictions.services.versions import version_load
from registry.audit import copy_text
from registry.models import Cycle

logger = logging.getLogger(__name__)

TOP_FACTORS = 3
# Above this many patients, scoring reads their sites' records rather than theirs.
PATIENTS_READ_ALONE = 1_000
# Rows per prediction when explaining (rows x features probes, bounded memory).
PROBE_ROWS = 100_000
_EPS = 1e-6


def tiers_of(definition: RiskModelDefinition, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The tier key and action of each probability (the definition's tiers, vectorised)."""
    tier = np.full(len(p), "", dtype=object)
    action = np.full(len(p), "", dtype=object)
    for t in definition.tiers:
        above = p >= t.lower if t.lower_inclusive else p > t.lower
        below = p <= t.upper if t.upper_inclusive else p < t.upper
        at = above & below & (tier == "")
        tier[at], action[at] = t.key, t.action
    return tier, action


def _logit(p) -> np.ndarray:
    return logit(np.clip(np.asarray(p, dtype=float), _EPS, 1 - _EPS))


def _plain(value):
    if value is None or pd.isna(value):
        return None
    return value.item() if hasattr(value, "item") else value


def _probe_logits(model: RiskPredictor, X: pd.DataFrame) -> np.ndarray:
    """Log-odds of each row with each feature in turn set to its reference: (rows, features).
    Block j of the stacked probes is X with feature j replaced."""
    n, names = len(X), list(model.features)
    probes = pd.concat([X] * len(names), ignore_index=True)
    for j, name in enumerate(names):
        column = probes[name].to_numpy(copy=True)
        column[j * n:(j + 1) * n] = model.reference[name]
        probes[name] = pd.Series(column, index=probes.index).astype(X[name].dtype) \
            if X[name].dtype != object else column
    return _logit(model.raw_proba(probes)).reshape(len(names), n).T


def factors_frame(model: RiskPredictor, X: pd.DataFrame, *, top: int = TOP_FACTORS
                  ) -> list[list[dict]]:
    """Per row, its `top` factors: for each feature, the change in log-odds when that feature
    alone is set to its training reference (as predictions.ml.training.explain, for a frame).
    The probes (each row once per feature) go through the model in a few large predictions,
    not one per feature: a pipeline's fixed cost per call was most of a save's scoring."""
    if X.empty:
        return []
    X = X[list(model.features)]
    base = _logit(model.raw_proba(X))
    contributions = np.empty((len(X), len(model.features)))
    per_chunk = max(1, PROBE_ROWS // len(model.features))
    for start in range(0, len(X), per_chunk):
        rows = X.iloc[start:start + per_chunk]
        contributions[start:start + len(rows)] = base[start:start + len(rows), None] - \
            _probe_logits(model, rows)
    order = np.argsort(-np.abs(contributions), axis=1)[:, :top]
    values = X.to_numpy(dtype=object)
    out = []
    for i in range(len(X)):
        row = []
        for j in order[i]:
            c = float(contributions[i, j])
            if abs(c) <= 1e-9:
                continue
            row.append({"feature": model.features[j], "value": _plain(values[i, j]),
                        "contribution": round(c, 4),
                        "direction": "raises" if c > 0 else "lowers"})
        out.append(row)
    return out


def champions() -> dict[str, ModelVersion]:
    return {a.risk_model: a.version for a in
            Alias.objects.select_related("version").filter(name=Alias.Name.CHAMPION)}


def _latest_cycle_per_patient(meta: pd.DataFrame) -> pd.Index:
    ordered = meta.assign(_id=meta.index).sort_values(["patient_id", "start_date", "_id"])
    return pd.Index(ordered.groupby("patient_id")["_id"].last())


def _scores_frame(version: ModelVersion, model: RiskPredictor, X: pd.DataFrame,
                  explain_ids: pd.Index, *, as_of: dt.datetime, now: dt.datetime
                  ) -> pd.DataFrame:
    definition = get_definition(version.risk_model)
    p = np.clip(model.predict_proba(X), 0.0, 1.0)
    tier, action = tiers_of(definition, p)
    frame = pd.DataFrame({"cycle_id": X.index.to_numpy(), "probability": p, "tier": tier,
                          "action": action}, index=X.index)
    factors: list[list[dict]] = [[] for _ in range(len(X))]
    explained = X.index.intersection(explain_ids)
    if len(explained):
        positions = X.index.get_indexer(explained)
        for position, row in zip(positions, factors_frame(model, X.loc[explained]),
                                 strict=True):
            factors[position] = row
    frame["factors"] = [json.dumps(f, ensure_ascii=False) for f in factors]
    frame["risk_model"] = version.risk_model
    frame["version_id"] = version.pk
    frame["inputs_as_of"] = as_of
    frame["scored_at"] = now
    return frame


_COLUMNS = ["cycle_id", "risk_model", "version_id", "probability", "tier", "action", "factors",
            "inputs_as_of", "scored_at"]


def _write(frame: pd.DataFrame) -> int:
    """Upsert the scores (one per cycle and risk model): COPY into a temporary table, then one
    INSERT ... ON CONFLICT; elsewhere than PostgreSQL, bulk_create with update_conflicts."""
    if frame.empty:
        return 0
    # A cycle deleted since the features were read has no row to score.
    if connection.vendor != "postgresql":
        rows = [RiskScore(**{**r, "factors": json.loads(r["factors"])})
                for r in frame[_COLUMNS].to_dict("records")]
        RiskScore.objects.bulk_create(
            [r for r in rows if Cycle.objects.filter(pk=r.cycle_id).exists()],
            update_conflicts=True, unique_fields=["cycle", "risk_model"],
            update_fields=[c for c in _COLUMNS if c not in ("cycle_id", "risk_model")])
        return len(rows)
    table = RiskScore._meta.db_table
    body = "".join(f"{line}\n" for line in map(
        "\t".join, zip(*(copy_text(frame[c]) for c in _COLUMNS), strict=True)))
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in _COLUMNS[2:])
    with transaction.atomic():
        connection.ensure_connection()
        with connection.cursor() as cursor:
            cursor.execute(
                f"CREATE TEMPORARY TABLE _scores (LIKE {table} INCLUDING DEFAULTS) "
                "ON COMMIT DROP")
            cursor.execute("ALTER TABLE _scores DROP COLUMN id")
        with connection.connection.cursor() as raw, raw.copy(
                f"COPY _scores ({', '.join(_COLUMNS)}) FROM STDIN") as copy:
            copy.write(body)
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} ({', '.join(_COLUMNS)}) "  # noqa: S608
                f"SELECT {', '.join('s.' + c for c in _COLUMNS)} FROM _scores s "
                f"JOIN {Cycle._meta.db_table} c ON c.id = s.cycle_id "
                f"ON CONFLICT (cycle_id, risk_model) DO UPDATE SET {updates}")
            return cursor.rowcount


def _score(*, site_ids: Iterable[int] | None, cycle_ids: Iterable[int] | None,
           versions: dict[str, ModelVersion], explain_all: bool,
           patient_ids: Iterable[int] | None = None) -> int:
    if not versions:
        return 0
    as_of = timezone.now()
    features = feature_set_for_sites(site_ids, as_of=as_of, patient_ids=patient_ids)
    X_all, meta = features.features, features.meta
    if cycle_ids is not None:
        wanted = X_all.index.intersection(pd.Index(sorted(set(cycle_ids))))
        X_all, meta = X_all.loc[wanted], meta.loc[wanted]
    if X_all.empty:
        return 0
    explain_ids = X_all.index if explain_all else _latest_cycle_per_patient(meta)
    now = timezone.now()
    written = 0
    for name, version in versions.items():
        model = version_load(version)
        X = X_all[list(get_definition(name).features)]
        written += _write(_scores_frame(version, model, X, explain_ids, as_of=as_of, now=now))
    return written


def cycles_score(*, cycle_ids: Iterable[int]) -> int:
    """Score these cycles with every champion (reading their patients' records, or their
    sites' when they are many patients); returns the rows written. Nothing to do, and no query
    of the clinical tables, while no champion exists."""
    versions = champions()
    cycle_ids = sorted(set(cycle_ids))
    if not versions or not cycle_ids:
        return 0
    owners = set(Cycle.objects.filter(pk__in=cycle_ids).values_list("site_id", "patient_id"))
    if not owners:
        return 0
    site_ids = {site for site, _ in owners}
    patients = {patient for _, patient in owners}
    # A few patients (a save): their records alone; many (an import): their sites' records.
    patient_ids = patients if len(patients) <= PATIENTS_READ_ALONE else None
    return _score(site_ids=site_ids, cycle_ids=cycle_ids, versions=versions, explain_all=True,
                  patient_ids=patient_ids)


def version_score_all(*, version_id: int) -> int:
    """Rescore every cycle with this version, if it is still its risk model's champion (a
    later move queued its own rescore); returns the rows written."""
    version = ModelVersion.objects.filter(pk=version_id).first()
    if version is None or champions().get(version.risk_model) != version:
        return 0
    return _score(site_ids=None, cycle_ids=None, versions={version.risk_model: version},
                  explain_all=False)


# Record kinds whose change may move a cycle's features (follow-ups are not read).
FEATURE_KINDS = frozenset({"patient", "diagnosis", "treatmentline", "cycle",
                           "drugadministration", "adverseevent", "labresult", "import"})


def changed_cycles(*, kind: str, site_ids: list[int], patient_ids: list[int] | None
                   ) -> list[int]:
    """The cycles whose features a change of `kind` may have moved: every cycle of the
    patients (their later cycles read earlier ones), or of the sites for an import."""
    if kind not in FEATURE_KINDS or not champions():
        return []
    cycles = Cycle.objects.filter(site_id__in=site_ids)
    if patient_ids is not None:
        cycles = cycles.filter(patient_id__in=patient_ids)
    return list(cycles.order_by("pk").values_list("pk", flat=True))
