"""The two risk models, defined in code: target, features, tiers and the action of each tier.

Labels are plain English strings here; the Django side marks them for translation. Concept
codes are those of the starter vocabulary (CTCAE terms by name, LOINC and ATC codes); a test
checks every code against registry/data/starter_vocabulary.json.
"""

from __future__ import annotations

from dataclasses import dataclass

# CTCAE v5.0 terms (vocabulary CTCAE, code = term name).
NAUSEA = "Nausea"
VOMITING = "Vomiting"
NEUTROPHIL_COUNT_DECREASED = "Neutrophil count decreased"
FEBRILE_NEUTROPENIA = "Febrile neutropenia"

# Guideline number of antiemetic agents by the cycle's emetogenic class (ASCO 2020 /
# MASCC-ESMO 2016: high three, moderate two, low one, minimal none).
ANTIEMETIC_GUIDELINE_AGENTS = {"minimal": 0, "low": 1, "moderate": 2, "high": 3}

# Prophylaxis planned for a cycle is what is given at its start: antiemetics on day 1, and
# G-CSF on days 1-3 (primary or secondary prophylaxis starts 24-72 h after chemotherapy, so it
# is prescribed with the cycle). G-CSF later in the cycle treats neutropenia and is not read.
ANTIEMETIC_PLANNED_DAYS = (1, 1)
GCSF_PLANNED_DAYS = (1, 3)


@dataclass(frozen=True)
class TargetTerm:
    code: str
    min_grade: int


@dataclass(frozen=True)
class Tier:
    """Probabilities p with lower <= p < upper (lower_inclusive / upper_inclusive say which
    bounds belong to the tier) get this tier and its action."""

    key: str
    label: str
    action: str
    action_label: str
    lower: float
    upper: float
    lower_inclusive: bool = True
    upper_inclusive: bool = False

    def contains(self, p: float) -> bool:
        above = p >= self.lower if self.lower_inclusive else p > self.lower
        below = p <= self.upper if self.upper_inclusive else p < self.upper
        return above and below


@dataclass(frozen=True)
class TierResult:
    tier: str
    action: str


@dataclass(frozen=True)
class RiskModelDefinition:
    name: str
    label: str
    target_label: str
    target_terms: tuple[TargetTerm, ...]
    numeric_features: tuple[str, ...]
    categorical_features: tuple[str, ...]
    tiers: tuple[Tier, ...]

    @property
    def features(self) -> tuple[str, ...]:
        return (*self.numeric_features, *self.categorical_features)

    @property
    def target_column(self) -> str:
        return f"y_{self.name}"


CINV = RiskModelDefinition(
    name="cinv",
    label="Chemotherapy-induced nausea and vomiting",
    target_label="Nausea or vomiting of CTCAE grade 2 or higher in the cycle",
    target_terms=(TargetTerm(NAUSEA, 2), TargetTerm(VOMITING, 2)),
    numeric_features=(
        "female", "age", "age_under_50", "ecog", "ecog_missing", "emetogenic_ordinal",
        "cycle_no", "line_no", "patient_cycle_index", "first_cycle", "days_since_last_cycle",
        "prev_cycle_cinv", "earlier_cinv", "antiemetic_agents", "antiemetic_shortfall",
        "antiemetic_inadequate",
    ),
    categorical_features=("cancer", "stage", "regimen", "emetogenic_class"),
    tiers=(
        Tier("low", "Low (< 10%)", "no_antiemetic", "No antiemetic prophylaxis", 0.0, 0.10),
        Tier("moderate", "Moderate (10-90%)", "one_or_two_antiemetics",
             "One or two antiemetic agents", 0.10, 0.90, upper_inclusive=True),
        Tier("high", "High (> 90%)", "three_antiemetics", "Three antiemetic agents",
             0.90, 1.0, lower_inclusive=False, upper_inclusive=True),
    ),
)

NEUTROPENIA = RiskModelDefinition(
    name="neutropenia",
    label="Severe neutropenia",
    target_label=("Neutrophil count decreased of CTCAE grade 3 or higher, or febrile "
                  "neutropenia, in the cycle"),
    target_terms=(TargetTerm(NEUTROPHIL_COUNT_DECREASED, 3), TargetTerm(FEBRILE_NEUTROPENIA, 3)),
    numeric_features=(
        "female", "age", "age_65_plus", "ecog", "ecog_missing", "ecog_2_plus", "fn_risk_ordinal",
        "cycle_no", "line_no", "patient_cycle_index", "first_cycle", "days_since_last_cycle",
        "prev_cycle_neutropenia", "earlier_neutropenia", "gcsf_planned",
        "log_anc", "anc_missing", "anc_days_before", "log_wbc", "platelets", "hemoglobin",
        "log_alt",
    ),
    categorical_features=("cancer", "stage", "regimen", "fn_risk"),
    tiers=(
        Tier("low", "Low (< 10%)", "no_gcsf", "No routine G-CSF", 0.0, 0.10),
        Tier("intermediate", "Intermediate (10-20%)", "consider_gcsf",
             "Consider G-CSF with patient risk factors", 0.10, 0.20),
        Tier("high", "High (>= 20%)", "primary_gcsf", "Primary G-CSF prophylaxis", 0.20, 1.0,
             upper_inclusive=True),
    ),
)

DEFINITIONS: dict[str, RiskModelDefinition] = {d.name: d for d in (CINV, NEUTROPENIA)}


class UnknownRiskModel(KeyError):
    pass


def definition(name: str | RiskModelDefinition) -> RiskModelDefinition:
    if isinstance(name, RiskModelDefinition):
        return name
    try:
        return DEFINITIONS[name]
    except KeyError:
        raise UnknownRiskModel(f"Unknown risk model {name!r}; known: {', '.join(DEFINITIONS)}.")\
            from None


def tier_of(model: str | RiskModelDefinition, probability: float) -> TierResult:
    """The tier of a predicted probability and the action it recommends."""
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"A probability lies in [0, 1], not {probability!r}.")
    for tier in definition(model).tiers:
        if tier.contains(probability):
            return TierResult(tier.key, tier.action)
    raise AssertionError("tiers cover [0, 1]")  # pragma: no cover
