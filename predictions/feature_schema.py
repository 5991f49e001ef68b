"""The feature schema of a risk model's version: what a partner sends to have a cycle scored.

Nothing here lists the features a second time. A schema is derived from:

- the model definition (predictions.ml.definitions): the feature names, in order, and which
  are numeric and which categorical;
- the version's fitted pipeline: the categories each categorical feature was trained on (its
  encoder's `categories_`), plus the feature builder's "unknown" (what it writes for a missing
  value); a category the model never saw would be silently ignored by the encoder, so it is
  refused instead;
- the feature builder's rules (predictions.ml.features, .vocabulary, .definitions) and the
  registry's limits on what is entered (registry.limits): `NUMERIC_DOMAINS` gives each numeric
  feature's kind (a 0/1 flag, a whole number or a real number), its range, and whether the
  builder can leave it missing (null: the pipelines impute it). A test builds features from a
  synthetic cohort and checks every value lies inside its domain, and that every numeric
  feature of every definition has one.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from predictions.ml import definitions as d
from predictions.ml import features as f
from predictions.ml import vocabulary as v
from predictions.ml.training import RiskPredictor
from registry import limits as L

BINARY = "binary"
INTEGER = "integer"
NUMBER = "number"
CATEGORY = "category"
KINDS = (BINARY, INTEGER, NUMBER, CATEGORY)

# Plausibility bounds of values the builder computes from entered data (no registry limit
# bounds them): an age in years, days between two cycles, lab values in their canonical units
# (registry/data/starter_vocabulary.json: 10*9/L for counts, g/L for haemoglobin, U/L for ALT).
AGE_MAX = 120
DAYS_BETWEEN_CYCLES_MAX = 100 * 366
ANTIEMETIC_AGENTS_MAX = 10
COUNT_MAX = 1000.0  # neutrophils, leukocytes (10*9/L)
PLATELETS_MAX = 5000.0  # 10*9/L
HEMOGLOBIN_MAX = 300.0  # g/L
ALT_MAX = 100_000.0  # U/L
# The builder's floor before a log (features.build_features clips counts at 0.05, ALT at 1).
COUNT_FLOOR = 0.05
ALT_FLOOR = 1.0


@dataclass(frozen=True)
class Domain:
    kind: str
    minimum: float
    maximum: float
    nullable: bool = False


def _flag(*, nullable: bool = False) -> Domain:
    return Domain(BINARY, 0, 1, nullable)


def _ordinal(classes: tuple[str, ...]) -> Domain:
    return Domain(INTEGER, 0, len(classes) - 1, nullable=True)


NUMERIC_DOMAINS: dict[str, Domain] = {
    "female": _flag(nullable=True),
    "age": Domain(INTEGER, 0, AGE_MAX, nullable=True),
    "age_under_50": _flag(nullable=True),
    "age_65_plus": _flag(nullable=True),
    "ecog": Domain(INTEGER, L.ECOG_MIN, L.ECOG_MAX, nullable=True),
    "ecog_missing": _flag(),
    "ecog_2_plus": _flag(),
    "emetogenic_ordinal": _ordinal(v.EMETOGENIC_CLASSES),
    "fn_risk_ordinal": _ordinal(v.FN_RISK_CLASSES),
    "cycle_no": Domain(INTEGER, 1, L.CYCLE_NO_MAX),
    "line_no": Domain(INTEGER, 1, L.LINE_NO_MAX),
    "patient_cycle_index": Domain(INTEGER, 0, L.LINE_NO_MAX * L.CYCLE_NO_MAX - 1),
    "first_cycle": _flag(),
    "days_since_last_cycle": Domain(INTEGER, 0, DAYS_BETWEEN_CYCLES_MAX, nullable=True),
    "prev_cycle_cinv": _flag(),
    "earlier_cinv": _flag(),
    "antiemetic_agents": Domain(INTEGER, 0, ANTIEMETIC_AGENTS_MAX),
    "antiemetic_shortfall": Domain(INTEGER, 0, max(d.ANTIEMETIC_GUIDELINE_AGENTS.values()),
                                   nullable=True),
    "antiemetic_inadequate": _flag(nullable=True),
    "prev_cycle_neutropenia": _flag(),
    "earlier_neutropenia": _flag(),
    "gcsf_planned": _flag(),
    "log_anc": Domain(NUMBER, math.log(COUNT_FLOOR), math.log(COUNT_MAX), nullable=True),
    "anc_missing": _flag(),
    "anc_days_before": Domain(INTEGER, 0, f.LAB_LOOKBACK_DAYS, nullable=True),
    "log_wbc": Domain(NUMBER, math.log(COUNT_FLOOR), math.log(COUNT_MAX), nullable=True),
    "platelets": Domain(NUMBER, 0, PLATELETS_MAX, nullable=True),
    "hemoglobin": Domain(NUMBER, 0, HEMOGLOBIN_MAX, nullable=True),
    "log_alt": Domain(NUMBER, math.log(ALT_FLOOR), math.log(ALT_MAX), nullable=True),
}


@dataclass(frozen=True)
class FeatureSpec:
    """One input of a score: its name, kind, range (numbers) or categories (categories)."""

    name: str
    kind: str
    nullable: bool
    minimum: float | None = None
    maximum: float | None = None
    categories: tuple[str, ...] = field(default=())

    @property
    def numeric(self) -> bool:
        return self.kind != CATEGORY


@dataclass(frozen=True)
class FeatureSchema:
    risk_model: str
    features: tuple[FeatureSpec, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.features)


class SchemaUnavailable(ValueError):
    """A fitted model whose categorical encoder could not be read."""


def trained_categories(model: RiskPredictor) -> dict[str, tuple[str, ...]]:
    """The categories each categorical feature was trained on: the fitted encoder of the
    pipeline's "categorical" columns (every candidate of predictions.ml.pipelines has one)."""
    try:
        columns = model.pipeline.named_steps["columns"]
        encoder = columns.named_transformers_["categorical"]
        names = next(cols for name, _, cols in columns.transformers_ if name == "categorical")
        return {str(name): tuple(sorted({str(c) for c in categories}))
                for name, categories in zip(names, encoder.categories_, strict=True)}
    except (AttributeError, KeyError, StopIteration, TypeError, ValueError) as error:
        raise SchemaUnavailable(f"The model's categorical encoder is not readable: {error}.") \
            from None


def schema_of(risk_model: str, model: RiskPredictor) -> FeatureSchema:
    """The feature schema of a version of `risk_model` whose fitted model is `model`."""
    definition = d.definition(risk_model)
    trained = trained_categories(model)
    specs: list[FeatureSpec] = []
    for name in definition.numeric_features:
        domain = NUMERIC_DOMAINS[name]
        specs.append(FeatureSpec(name, domain.kind, domain.nullable, domain.minimum,
                                 domain.maximum))
    for name in definition.categorical_features:
        categories = tuple(sorted(set(trained.get(name, ())) | {f.UNKNOWN}))
        specs.append(FeatureSpec(name, CATEGORY, False, categories=categories))
    return FeatureSchema(definition.name, tuple(specs))


# An unknown field's name is repeated in an error up to this length, printable characters only.
NAME_SHOWN = 60
_UNPRINTABLE = re.compile(r"[^\x20-\x7e\u00a0-\uffff]")


def shown_name(name: object) -> str:
    """A caller's field name as an error may repeat it: cut, without control characters."""
    return _UNPRINTABLE.sub("?", str(name)[:NAME_SHOWN])
