"""Reads behind the partner API's risk-model endpoints (docs/partner-api-scoring.md): the
champion as served (its version, fitted model and feature schema), scores of cycles a partner
sends, and the champion's model card.

Partner scores are computed and answered, never stored: the cycles are not registry cycles
(RiskScore rows belong to the registry's own cycles), so scoring writes nothing.

The fitted model is cached per process by version id and artifact SHA-256 (`version_model`):
loaded once, with its checksum verified by predictions.services.versions.version_load; a
champion move changes the key, so the next request loads the new version; a stored file whose
bytes differ from the recorded checksum is refused (503 model_unavailable), never unpickled.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from django.http import Http404
from django.utils.translation import gettext as _

from predictions import labels
from predictions.feature_schema import (
    BINARY,
    CATEGORY,
    INTEGER,
    FeatureSchema,
    SchemaUnavailable,
    schema_of,
    shown_name,
)
from predictions.ml.definitions import DEFINITIONS, RiskModelDefinition
from predictions.ml.training import ArtifactIntegrityError, RiskPredictor
from predictions.models import Alias, AliasMove, ModelVersion
from predictions.services.scoring import tiers_of
from predictions.services.versions import version_load
from registry.errors import RegistryError, ValidationFailed

logger = logging.getLogger(__name__)

# Cycles per score request: at least one, at most this many.
SCORE_BATCH_MAX = 1_000
# A caller's reference of a cycle, echoed back.
REF_MAX_LENGTH = 100
# Problems reported per refused request (a batch of 1,000 bad cycles is not answered with
# 30,000 messages); the message says how many more there were.
ERRORS_SHOWN_MAX = 50
# Fitted models kept per process (each champion, and the one it just replaced).
MODELS_CACHED = 4
# Disclosure control of the per-site rows of a model card: a site is shown (anonymised) only
# when its cycles with and without the event are each at least this many (the registry's
# minimum cell, as research.disclosure.MIN_CELL), and its counts are rounded to ROUND_TO.
PER_SITE_MIN_CELL = 11
PER_SITE_ROUND_TO = 5
REF = "ref"


class NoChampion(RegistryError):
    """The risk model has no champion yet (409 no_champion: retry after a training run)."""

    code = "no_champion"


class ModelUnavailable(RegistryError):
    """The champion's artifact was refused (503 model_unavailable: an administrator acts)."""

    code = "model_unavailable"


# --- The champion as served ---------------------------------------------------------------------

_MODELS: OrderedDict[tuple[int, str], tuple[RiskPredictor, FeatureSchema]] = OrderedDict()
_MODELS_LOCK = threading.Lock()


def version_model(version: ModelVersion) -> tuple[RiskPredictor, FeatureSchema]:
    """The version's fitted model and feature schema, loaded once per process (key: version
    id and artifact SHA-256). Refuses (ModelUnavailable) an artifact whose bytes do not hash to
    the recorded SHA-256."""
    key = (version.pk, version.artifact_sha256)
    with _MODELS_LOCK:  # one load per key, even under concurrent first requests
        cached = _MODELS.get(key)
        if cached is not None:
            _MODELS.move_to_end(key)
            return cached
        try:
            model = version_load(version)
            cached = (model, schema_of(version.risk_model, model))
        except (ArtifactIntegrityError, SchemaUnavailable, OSError) as error:
            logger.error("%s v%s not served: %s", version.risk_model, version.number, error)
            raise ModelUnavailable() from None  # the kind's own words (registry.api.errors)
        _MODELS[key] = cached
        while len(_MODELS) > MODELS_CACHED:
            _MODELS.popitem(last=False)
    return cached


def models_cache_clear() -> None:
    with _MODELS_LOCK:
        _MODELS.clear()


def risk_model_of(name: str) -> RiskModelDefinition:
    """The definition of a risk model named in a URL; an unknown name is a 404."""
    if name not in DEFINITIONS:
        raise Http404(_("No such risk model."))
    return DEFINITIONS[name]


@dataclass(frozen=True)
class Served:
    version: ModelVersion
    model: RiskPredictor
    schema: FeatureSchema


def champion_served(name: str) -> Served:
    """The champion of `name` with its model and schema; NoChampion (409) when none."""
    definition = risk_model_of(name)
    alias = (Alias.objects.select_related("version")
             .filter(risk_model=definition.name, name=Alias.Name.CHAMPION).first())
    if alias is None:
        raise NoChampion(_("%(model)s has no champion version yet: nothing can be scored or "
                           "described until a training run produces one.") % {
            "model": definition.name})
    model, schema = version_model(alias.version)
    return Served(alias.version, model, schema)


def risk_models_listed() -> list[dict]:
    """Every risk model with its label and its champion's number (None without one)."""
    champions = dict(Alias.objects.filter(name=Alias.Name.CHAMPION)
                     .values_list("risk_model", "version__number"))
    return [{"risk_model": name, "label": labels.label(labels.RISK_MODEL_LABELS, name),
             "champion": champions.get(name)} for name in DEFINITIONS]


# --- Input ----------------------------------------------------------------------------------------

class _Problems:
    def __init__(self) -> None:
        self.errors: dict[str, list[str]] = {}
        self.count = 0

    def add(self, where: str, message: str) -> None:
        self.count += 1
        if len(self.errors) < ERRORS_SHOWN_MAX:
            self.errors.setdefault(where, []).append(message)

    def raise_if_any(self) -> None:
        if not self.count:
            return
        if self.count > len(self.errors):
            self.errors.setdefault("__all__", []).append(
                _("%(n)d problems in all; the first %(shown)d are shown.") % {
                    "n": self.count, "shown": sum(map(len, self.errors.values()))})
        raise ValidationFailed(errors=self.errors)


def _number_problem(spec, value: Any) -> str | None:
    if value is None:
        return None if spec.nullable else _("A number is needed (this feature is never "
                                            "missing).")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _("A number is needed, not %(type)s.") % {"type": _json_type(value)}
    if isinstance(value, int) and abs(value) > 2**53:
        return _("The number is too large.")
    number = float(value)
    if not math.isfinite(number):
        return _("A finite number is needed.")
    if not spec.minimum <= number <= spec.maximum:
        return _("The number must lie between %(min)s and %(max)s.") % {
            "min": _plain_number(spec.minimum), "max": _plain_number(spec.maximum)}
    if spec.kind == BINARY and number not in (0.0, 1.0):
        return _("Only 0 or 1 is allowed.")
    if spec.kind == INTEGER and not number.is_integer():
        return _("A whole number is needed.")
    return None


def _plain_number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.4g}"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "text"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    return "a number"


def cycles_frame(schema: FeatureSchema, cycles: Any) -> tuple[pd.DataFrame, list[str | None]]:
    """The cycles a partner sent as the model's feature frame (one row per cycle, in order)
    and their references; ValidationFailed naming each problem's cycle index and field
    ("cycles.3.age"). Every field of the schema is required (null where the schema allows it),
    any other field is refused."""
    problems = _Problems()
    if not isinstance(cycles, list):
        problems.add("cycles", _("A list of cycles is needed."))
        problems.raise_if_any()
    if not 1 <= len(cycles) <= SCORE_BATCH_MAX:
        problems.add("cycles", _("Send 1 to %(max)d cycles per request (%(n)d sent).") % {
            "max": SCORE_BATCH_MAX, "n": len(cycles)})
        problems.raise_if_any()
    specs = {spec.name: spec for spec in schema.features}
    allowed = {spec.name: frozenset(spec.categories) for spec in schema.features
               if spec.kind == CATEGORY}
    columns: dict[str, list] = {name: [] for name in specs}
    refs: list[str | None] = []
    for index, cycle in enumerate(cycles):
        where = f"cycles.{index}"
        if not isinstance(cycle, Mapping):
            problems.add(where, _("An object of features is needed."))
            continue
        ref = cycle.get(REF)
        if ref is not None and (not isinstance(ref, str) or len(ref) > REF_MAX_LENGTH
                                or "\x00" in ref):
            problems.add(f"{where}.{REF}", _("Text of at most %(n)d characters is needed.") % {
                "n": REF_MAX_LENGTH})
        refs.append(ref)
        for key in cycle:
            if key != REF and key not in specs:
                problems.add(f"{where}.{shown_name(key)}",
                             _("Unknown feature; GET this model's schema/ for the features."))
        for name, spec in specs.items():
            if name not in cycle:
                problems.add(f"{where}.{name}", _("This feature is required."))
                continue
            value = cycle[name]
            if spec.kind == CATEGORY:
                if not isinstance(value, str):
                    problems.add(f"{where}.{name}", _("Text is needed, not %(type)s.") % {
                        "type": _json_type(value)})
                elif value not in allowed[name]:
                    problems.add(f"{where}.{name}", _(
                        "Unknown category %(value)r; the categories are in this model's "
                        "schema/.") % {"value": shown_name(value)})
                else:
                    columns[name].append(value)
                continue
            problem = _number_problem(spec, value)
            if problem:
                problems.add(f"{where}.{name}", problem)
            else:
                columns[name].append(np.nan if value is None else float(value))
    problems.raise_if_any()
    # Arrays, not Series: building a frame column by column was most of a one-cycle request.
    frame = pd.DataFrame({name: np.array(values, dtype=object if specs[name].kind == CATEGORY
                                         else "float64") for name, values in columns.items()},
                         copy=False)
    return frame[list(schema.names)], refs


# --- Scores -------------------------------------------------------------------------------------

def cycles_score(served: Served, frame: pd.DataFrame, refs: Sequence[str | None]) -> list[dict]:
    """Probability, tier and recommended action of each cycle (one prediction for the batch);
    the labels in the active language. Nothing is written."""
    definition = DEFINITIONS[served.version.risk_model]
    # Native threads: one per web process (registry/wsgi.py sets it before the libraries load,
    # where a per-request limit would race between a process's threads).
    p = np.clip(served.model.predict_proba(frame), 0.0, 1.0)
    tiers, actions = tiers_of(definition, p)
    name = definition.name
    tier_labels = {t.key: labels.label(labels.TIER_LABELS, (name, t.key))
                   for t in definition.tiers}
    action_labels = {t.action: labels.label(labels.ACTION_LABELS, t.action)
                     for t in definition.tiers}
    return [{"index": i, "ref": refs[i], "probability": float(p[i]), "tier": tiers[i],
             "tier_label": tier_labels[tiers[i]], "action": actions[i],
             "action_label": action_labels[actions[i]]} for i in range(len(p))]


def version_described(version: ModelVersion) -> dict:
    return {"risk_model": version.risk_model, "number": version.number,
            "algorithm": version.algorithm,
            "algorithm_label": labels.label(labels.ALGORITHM_LABELS, version.algorithm),
            "trained_at": version.created_at, "artifact_sha256": version.artifact_sha256}


# --- The model card -----------------------------------------------------------------------------

def features_described(schema: FeatureSchema) -> list[dict]:
    return [{"name": spec.name, "label": labels.label(labels.FEATURE_LABELS, spec.name),
             "type": spec.kind, "nullable": spec.nullable,
             "minimum": None if spec.kind == CATEGORY else spec.minimum,
             "maximum": None if spec.kind == CATEGORY else spec.maximum,
             "categories": list(spec.categories) if spec.kind == CATEGORY else None}
            for spec in schema.features]


def _site_label(rank: int) -> str:
    """"A" ... "Z", "AA", "AB", ... for the rank-th site (0-based)."""
    letters = ""
    rank += 1
    while rank:
        rank, rest = divmod(rank - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


def _rounded(count: int) -> int:
    return int(PER_SITE_ROUND_TO * round(count / PER_SITE_ROUND_TO))


def per_site_disclosed(rows: Sequence[Mapping]) -> dict:
    """Per-site performance without naming a site: sites ordered by size (cycles, then
    events), a site shown only when its cycles with and without the event are each at least
    PER_SITE_MIN_CELL, labelled "Site A", "Site B"... in that order, counts rounded to
    PER_SITE_ROUND_TO; the rest counted, not shown."""
    ordered = sorted(rows, key=lambda r: (-int(r.get("cycles") or 0),
                                          -int(r.get("events") or 0), str(r.get("site"))))
    shown, hidden = [], 0
    for row in ordered:
        cycles, events = int(row.get("cycles") or 0), int(row.get("events") or 0)
        if events < PER_SITE_MIN_CELL or cycles - events < PER_SITE_MIN_CELL:
            hidden += 1
            continue
        shown.append({"site": _("Site %(letter)s") % {"letter": _site_label(len(shown))},
                      "cycles": _rounded(cycles), "events": _rounded(events),
                      "auroc": row.get("auroc"), "auroc_ci": row.get("ci")})
    return {"min_cell": PER_SITE_MIN_CELL, "rounded_to": PER_SITE_ROUND_TO, "sites": shown,
            "hidden_sites": hidden}


METRIC_KEYS = ("loso_auroc", "loso_auroc_ci", "auprc", "brier", "calibration_in_the_large",
               "calibration_intercept", "calibration_slope", "e_avg", "ece",
               "ordinary_cv_auroc")
SNAPSHOT_KEYS = ("cycles", "patients", "sites", "first_cycle", "last_cycle", "as_of")


def alias_history(name: str) -> list[dict]:
    """Every move of the champion alias, newest first: when, which versions, what kind; the
    reason only for the system's own moves (an admin's free text may name people or sites)."""
    moves = (AliasMove.objects.filter(risk_model=name, alias=Alias.Name.CHAMPION)
             .select_related("from_version", "to_version"))
    return [{"moved_at": m.moved_at, "kind": m.kind, "kind_label": m.get_kind_display(),
             "from_version": m.from_version.number if m.from_version else None,
             "to_version": m.to_version.number,
             "reason": m.reason if m.kind == AliasMove.Kind.AUTOMATIC else None}
            for m in moves]


def model_card(name: str) -> dict:
    """The champion's model card (docs/partner-api-scoring.md)."""
    served = champion_served(name)
    version, definition = served.version, DEFINITIONS[name]
    snapshot = {key: version.snapshot.get(key) for key in SNAPSHOT_KEYS}
    return {
        "risk_model": name,
        "label": labels.label(labels.RISK_MODEL_LABELS, name),
        "version": {**version_described(version), "params": version.params,
                    "recalibration": version.recalibration or None},
        "intended_use": labels.label(labels.INTENDED_USE, name),
        "out_of_scope_use": labels.label(labels.OUT_OF_SCOPE_USE, name),
        "target": {"definition": labels.label(labels.TARGET_LABELS, name),
                   "terms": [{"ctcae_term": t.code, "min_grade": t.min_grade}
                             for t in definition.target_terms]},
        "features": features_described(served.schema),
        "tiers": [{"key": t.key, "label": labels.label(labels.TIER_LABELS, (name, t.key)),
                   "action": t.action,
                   "action_label": labels.label(labels.ACTION_LABELS, t.action),
                   "lower": t.lower, "upper": t.upper, "lower_inclusive": t.lower_inclusive,
                   "upper_inclusive": t.upper_inclusive} for t in definition.tiers],
        "training": {**snapshot, "events": version.events,
                     "fingerprint": version.fingerprint},
        "metrics": {key: version.metrics.get(key) for key in METRIC_KEYS},
        "per_site": per_site_disclosed(version.per_site),
        "calibration_curve": [{"predicted": p.get("predicted"), "observed": p.get("observed")}
                              for p in version.calibration_curve],
        "alias_history": alias_history(name),
    }
