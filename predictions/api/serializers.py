"""Inputs and outputs of the risk-model endpoints (predictions/api/views.py).

The cycle a score request carries is checked against the champion's feature schema by
predictions.selectors.scoring.cycles_frame (fast, for batches of 1,000); the per-model cycle
serializers here only document it in the OpenAPI schema, built from the same sources (the
model definition and predictions.feature_schema.NUMERIC_DOMAINS), never listed by hand.
"""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import (
    PolymorphicProxySerializer,
    extend_schema_serializer,
)
from rest_framework import serializers
from rest_framework.exceptions import ValidationError

from predictions.feature_schema import BINARY, INTEGER, KINDS, NUMERIC_DOMAINS
from predictions.ml.definitions import DEFINITIONS, RiskModelDefinition
from predictions.models import AliasMove
from predictions.selectors.scoring import REF, REF_MAX_LENGTH, SCORE_BATCH_MAX
from registry.api.inputs import StrictInput

TIER_KEYS = sorted({t.key for d in DEFINITIONS.values() for t in d.tiers})
ACTION_KEYS = sorted({t.action for d in DEFINITIONS.values() for t in d.tiers})


# -- input --------------------------------------------------------------------------------------


def _cycle_serializer(definition: RiskModelDefinition) -> serializers.Serializer:
    """The documented shape of one cycle of `definition` (categories: see schema/)."""
    fields: dict[str, serializers.Field] = {
        REF: serializers.CharField(required=False, allow_null=True, max_length=REF_MAX_LENGTH,
                                   help_text="Your own reference of the cycle, echoed back.")}
    for name in definition.numeric_features:
        domain = NUMERIC_DOMAINS[name]
        kind = serializers.IntegerField if domain.kind in (BINARY, INTEGER) else \
            serializers.FloatField
        fields[name] = kind(min_value=domain.minimum, max_value=domain.maximum,
                            allow_null=domain.nullable,
                            help_text=f"{domain.kind}" + ("; null when not known"
                                                         if domain.nullable else ""))
    for name in definition.categorical_features:
        fields[name] = serializers.CharField(
            help_text="One of the champion's categories for this feature (GET schema/).")
    title = "".join(part.title() for part in definition.name.split("_"))
    cls = type(f"{title}CycleInput", (serializers.Serializer,), fields)
    return extend_schema_serializer(component_name=f"{title}Cycle")(cls)


def _score_input(definition: RiskModelDefinition) -> serializers.Serializer:
    title = "".join(part.title() for part in definition.name.split("_"))
    cls = type(f"{title}ScoreInput", (serializers.Serializer,), {
        "cycles": serializers.ListField(child=_cycle_serializer(definition)(),
                                        min_length=1, max_length=SCORE_BATCH_MAX)})
    return extend_schema_serializer(component_name=f"{title}ScoreInput")(cls)


# The request body of score/, one shape per risk model (documentation).
SCORE_INPUT_DOC = PolymorphicProxySerializer(
    component_name="ScoreInput",
    serializers=[_score_input(d) for d in DEFINITIONS.values()],
    resource_type_field_name=None)


class CyclesField(serializers.Field):
    """A list of 1 to SCORE_BATCH_MAX objects, checked for its length before anything is read
    in it (each cycle is then checked against the champion's schema)."""

    def to_internal_value(self, data: Any) -> list:
        if not isinstance(data, list):
            raise ValidationError(_("A list of cycles is needed."))
        if not 1 <= len(data) <= SCORE_BATCH_MAX:
            raise ValidationError(_("Send 1 to %(max)d cycles per request (%(n)d sent).") % {
                "max": SCORE_BATCH_MAX, "n": len(data)})
        return data

    def to_representation(self, value: Any) -> Any:
        return value


class ScoreInput(StrictInput):
    """{"cycles": [...]}, nothing else."""

    cycles = CyclesField()


# -- output -------------------------------------------------------------------------------------


@extend_schema_serializer(component_name="RiskModelVersion")
class VersionOutput(serializers.Serializer):
    risk_model = serializers.ChoiceField(choices=list(DEFINITIONS))
    number = serializers.IntegerField(help_text="The version's number within its risk model.")
    algorithm = serializers.CharField()
    algorithm_label = serializers.CharField()
    trained_at = serializers.DateTimeField(help_text="When the version was recorded.")
    artifact_sha256 = serializers.CharField(
        help_text="SHA-256 of the fitted model's stored bytes; the same number always has "
                  "the same hash.")


@extend_schema_serializer(component_name="CycleScore")
class CycleScoreOutput(serializers.Serializer):
    index = serializers.IntegerField(help_text="The cycle's position in the request, from 0.")
    ref = serializers.CharField(allow_null=True, help_text="Your reference, as sent.")
    probability = serializers.FloatField(help_text="Predicted probability of the outcome.")
    tier = serializers.ChoiceField(choices=TIER_KEYS)
    tier_label = serializers.CharField()
    action = serializers.ChoiceField(choices=ACTION_KEYS,
                                     help_text="The tier's recommended action.")
    action_label = serializers.CharField(help_text="The action in the request's language.")


@extend_schema_serializer(component_name="ScoreResult")
class ScoreOutput(serializers.Serializer):
    model = VersionOutput()
    scores = CycleScoreOutput(many=True)


@extend_schema_serializer(component_name="RiskModel")
class RiskModelOutput(serializers.Serializer):
    risk_model = serializers.ChoiceField(choices=list(DEFINITIONS))
    label = serializers.CharField()
    champion = serializers.IntegerField(allow_null=True,
                                        help_text="The champion's version number; null "
                                                  "while there is none (score/ answers 409).")


@extend_schema_serializer(component_name="FeatureSpec")
class FeatureOutput(serializers.Serializer):
    name = serializers.CharField()
    label = serializers.CharField()
    type = serializers.ChoiceField(choices=list(KINDS),
                                   help_text="binary: 0 or 1; integer: a whole number; "
                                             "number; category: one of `categories`.")
    nullable = serializers.BooleanField(help_text="Whether null (not known) is accepted.")
    minimum = serializers.FloatField(allow_null=True)
    maximum = serializers.FloatField(allow_null=True)
    categories = serializers.ListField(child=serializers.CharField(), allow_null=True)


@extend_schema_serializer(component_name="FeatureSchema")
class SchemaOutput(serializers.Serializer):
    risk_model = serializers.ChoiceField(choices=list(DEFINITIONS))
    version = VersionOutput()
    features = FeatureOutput(many=True)
    batch_max = serializers.IntegerField(help_text="Most cycles per score request.")
    ref_max_length = serializers.IntegerField()


@extend_schema_serializer(component_name="TargetTerm")
class TargetTermOutput(serializers.Serializer):
    ctcae_term = serializers.CharField()
    min_grade = serializers.IntegerField()


@extend_schema_serializer(component_name="Target")
class TargetOutput(serializers.Serializer):
    definition = serializers.CharField()
    terms = TargetTermOutput(many=True)


@extend_schema_serializer(component_name="Tier")
class TierOutput(serializers.Serializer):
    key = serializers.ChoiceField(choices=TIER_KEYS)
    label = serializers.CharField()
    action = serializers.ChoiceField(choices=ACTION_KEYS)
    action_label = serializers.CharField()
    lower = serializers.FloatField()
    upper = serializers.FloatField()
    lower_inclusive = serializers.BooleanField()
    upper_inclusive = serializers.BooleanField()


@extend_schema_serializer(component_name="CardVersion")
class CardVersionOutput(VersionOutput):
    params = serializers.DictField(child=serializers.JSONField(),
                                   help_text="The final estimator's parameters.")
    recalibration = serializers.CharField(allow_null=True)


@extend_schema_serializer(component_name="TrainingSnapshot")
class TrainingOutput(serializers.Serializer):
    cycles = serializers.IntegerField(allow_null=True)
    events = serializers.IntegerField()
    patients = serializers.IntegerField(allow_null=True)
    sites = serializers.IntegerField(allow_null=True)
    first_cycle = serializers.DateField(allow_null=True)
    last_cycle = serializers.DateField(allow_null=True)
    as_of = serializers.CharField(allow_null=True, help_text="The extraction's snapshot time.")
    fingerprint = serializers.CharField(help_text="SHA-256 of the training data.")


def _interval() -> serializers.ListField:
    return serializers.ListField(child=serializers.FloatField(allow_null=True), min_length=2,
                                 max_length=2, allow_null=True)


@extend_schema_serializer(component_name="CardMetrics")
class MetricsOutput(serializers.Serializer):
    """Leave-one-site-out figures; null where a figure could not be computed."""

    loso_auroc = serializers.FloatField(allow_null=True)
    loso_auroc_ci = _interval()
    auprc = serializers.FloatField(allow_null=True)
    brier = serializers.FloatField(allow_null=True)
    calibration_in_the_large = serializers.FloatField(allow_null=True)
    calibration_intercept = serializers.FloatField(allow_null=True)
    calibration_slope = serializers.FloatField(allow_null=True)
    e_avg = serializers.FloatField(allow_null=True)
    ece = serializers.FloatField(allow_null=True)
    ordinary_cv_auroc = serializers.FloatField(allow_null=True)


@extend_schema_serializer(component_name="SitePerformance")
class SiteOutput(serializers.Serializer):
    site = serializers.CharField(help_text='"Site A" is the largest shown site, and so on; '
                                           "never a site's name or code.")
    cycles = serializers.IntegerField(help_text="Rounded to `rounded_to`.")
    events = serializers.IntegerField(help_text="Rounded to `rounded_to`.")
    auroc = serializers.FloatField(allow_null=True)
    auroc_ci = _interval()


@extend_schema_serializer(component_name="PerSitePerformance")
class PerSiteOutput(serializers.Serializer):
    min_cell = serializers.IntegerField()
    rounded_to = serializers.IntegerField()
    sites = SiteOutput(many=True)
    hidden_sites = serializers.IntegerField(help_text="Sites not shown (too few cycles with "
                                                      "or without the event).")


@extend_schema_serializer(component_name="CalibrationPoint")
class CalibrationPointOutput(serializers.Serializer):
    predicted = serializers.FloatField(allow_null=True)
    observed = serializers.FloatField(allow_null=True)


@extend_schema_serializer(component_name="AliasMove")
class AliasMoveOutput(serializers.Serializer):
    moved_at = serializers.DateTimeField()
    kind = serializers.ChoiceField(choices=AliasMove.Kind.choices)
    kind_label = serializers.CharField()
    from_version = serializers.IntegerField(allow_null=True)
    to_version = serializers.IntegerField()
    reason = serializers.CharField(allow_null=True,
                                   help_text="The rule's reason for an automatic move; null "
                                             "for a move by hand.")


@extend_schema_serializer(component_name="ModelCard")
class CardOutput(serializers.Serializer):
    risk_model = serializers.ChoiceField(choices=list(DEFINITIONS))
    label = serializers.CharField()
    version = CardVersionOutput()
    intended_use = serializers.CharField()
    out_of_scope_use = serializers.CharField()
    target = TargetOutput()
    features = FeatureOutput(many=True)
    tiers = TierOutput(many=True)
    training = TrainingOutput()
    metrics = MetricsOutput()
    per_site = PerSiteOutput()
    calibration_curve = CalibrationPointOutput(many=True)
    alias_history = AliasMoveOutput(many=True)
