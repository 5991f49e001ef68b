"""The partner API's aggregate and feasibility endpoints (docs/partner-api.md, "Aggregates and
feasibility").

Each POST checks its input here (unknown fields, wrong types, values outside the listed ones,
NaN and infinities, absurd ranges: a 400 naming the field), then hands the query to
research.services.partner_queries.partner_query_answer, which charges the partner's budget,
audits overlapping queries, logs the query and applies disclosure control to the raw answer
that `compute` returns. The raw answer is computed over the analysis snapshot only when that
service asks for it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from registry.api.inputs import StrictInput
from registry.api.permissions import HasScope
from registry.api.schema import error_responses
from registry.api.scopes import Scope
from registry.models import Site
from registry.models.terminology import Domain
from research import limits as L
from research.api.serializers import TextField
from research.criteria import CODE_PATTERN, STAGE_PATTERN
from research.partner.aggregates import aggregate_raw
from research.partner.answer import RawAnswer
from research.partner.dimensions import (
    BIOMARKERS,
    DIMENSIONS,
    MAX_BY,
    MAX_CYCLES_COUNTED,
    MAX_LINES_COUNTED,
    MEASURES,
    STAGES,
    concept_codes,
    dimension_values,
    dimensions_listed,
)
from research.partner.feasibility import feasibility_raw
from research.partner.snapshot import Snapshot, partner_snapshot
from research.services.partner_queries import partner_query_answer

# The statuses a partner query can answer with besides 200 (413: a body over the size limit;
# 429: the privacy budget or the rate limit).
QUERY_ERRORS = (400, 401, 403, 413, 415, 429)
GRADES = (1, 5)
_LOINC = re.compile(r"[0-9]{1,7}-[0-9]")
_BIOMARKER_VALUE = re.compile(rf"[0-9A-Z+\-%.<>=]{{1,{L.BIOMARKER_VALUE_MAX_LENGTH}}}")


def _answer(request: Request, *, endpoint: str, params: dict,
            compute: Callable[[Snapshot], RawAnswer]) -> dict:
    """The released answer of the question over the current analysis snapshot (one snapshot
    for the question's fingerprint and its computation: a repeat is answered from the log
    before anything is computed)."""
    snapshot = partner_snapshot()
    return partner_query_answer(user=request.user, token=request.auth, endpoint=endpoint,
                                params=params, compute=lambda: compute(snapshot),
                                snapshot_at=snapshot.snapshot_at.isoformat())


@extend_schema_field({"oneOf": [{"type": "string"}, {"type": "integer"}]})
class ValueField(serializers.Field):
    """A dimension's value: text, or an integer for the integer dimensions (a year, a cycle
    number); kept as text."""

    default_error_messages = {"invalid": gettext_lazy("Give a value as text or an integer.")}

    def to_internal_value(self, data: Any) -> str:
        if isinstance(data, bool) or not isinstance(data, str | int):
            self.fail("invalid")
        text = str(data)
        if not text or len(text) > L.PARTNER_VALUE_MAX_LENGTH or "\x00" in text:
            self.fail("invalid")
        return text

    def to_representation(self, value: Any) -> Any:
        return value


class FiniteFloatField(serializers.FloatField):
    """A number (not text, not a boolean), finite and within the bounds."""

    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        if isinstance(data, float) and not math.isfinite(data):
            self.fail("invalid")
        return super().to_internal_value(data)


# -- aggregates ---------------------------------------------------------------------------------


class AggregateInput(StrictInput):
    measure = serializers.ChoiceField(choices=list(MEASURES), help_text=(
        "patients: distinct patients per cell; incidence: patients with an event of `term` at "
        "grade >= `min_grade` among those treated, per cell."))
    by = serializers.ListField(
        child=serializers.ChoiceField(choices=list(DIMENSIONS)), max_length=MAX_BY,
        required=False, default=list,
        help_text=f"0 to {MAX_BY} dimensions (GET /api/v1/aggregates/dimensions/).")
    filters = serializers.DictField(
        child=serializers.ListField(child=ValueField(), max_length=L.PARTNER_VALUES_MAX,
                                    allow_empty=False),
        required=False, default=dict,
        help_text="Dimension -> the values kept (any of them).")
    term = TextField(max_length=L.PARTNER_VALUE_MAX_LENGTH, required=False,
                     help_text="incidence only: the CTCAE term's code, e.g. "
                               "\"Neutrophil count decreased\".")
    min_grade = serializers.IntegerField(min_value=GRADES[0], max_value=GRADES[1],
                                         required=False,
                                         help_text="incidence only: the lowest grade counted.")

    def validate_by(self, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise serializers.ValidationError(_("A dimension is named twice."))
        return value

    def validate_filters(self, value: Mapping[str, list[str]]) -> dict[str, list[str]]:
        if len(value) > len(DIMENSIONS):
            raise serializers.ValidationError(_("Too many filters."))
        listed = {name: [v.code for v in values] for name, values in dimension_values().items()}
        errors: dict[str, list[str]] = {}
        out: dict[str, list[str]] = {}
        for name, values in value.items():
            key = str(name)[:L.PARTNER_VALUE_MAX_LENGTH]
            if name not in DIMENSIONS:
                errors[key] = [_("Unknown dimension; the dimensions are %(names)s.") % {
                    "names": ", ".join(DIMENSIONS)}]
                continue
            wrong = [v for v in values if v not in listed[name]]
            if wrong:
                errors[key] = [_("Not a value of %(name)s: %(values)s.") % {
                    "name": name, "values": ", ".join(repr(v) for v in wrong[:5])}]
                continue
            out[name] = sorted(set(values), key=listed[name].index)
        if errors:
            raise serializers.ValidationError(errors)
        return out

    def validate(self, data: dict) -> dict:
        errors: dict[str, list[str]] = {}
        incidence = data["measure"] == "incidence"
        by, filters = data["by"], data["filters"]
        if ("cycle_number" in by or "cycle_number" in filters) and not (
                incidence and "regimen" in by):
            errors["by"] = [_("cycle_number needs the measure incidence and regimen in by.")]
        if incidence:
            for name in ("term", "min_grade"):
                if data.get(name) is None:
                    errors[name] = [_("The measure incidence needs this.")]
            if data.get("term") is not None and data["term"] not in concept_codes(
                    Domain.ADVERSE_EVENT):
                errors["term"] = [_("Not a CTCAE term of the vocabulary "
                                    "(GET /api/v1/aggregates/dimensions/ lists them).")]
        else:
            for name in ("term", "min_grade"):
                if data.get(name) is not None:
                    errors[name] = [_("Only the measure incidence takes this.")]
        if errors:
            raise serializers.ValidationError(errors)
        return {"measure": data["measure"], "by": list(by),
                "filters": {k: list(v) for k, v in sorted(filters.items())},
                "term": data.get("term"), "min_grade": data.get("min_grade")}


class LabeledValueOutput(serializers.Serializer):
    code = serializers.JSONField(help_text="The value as a query names it.")
    label_en = serializers.CharField()
    label_zh = serializers.CharField()


class DimensionOutput(serializers.Serializer):
    name = serializers.CharField()
    label_en = serializers.CharField()
    label_zh = serializers.CharField()
    level = serializers.ChoiceField(choices=["patient", "regimen", "cycle"], help_text=(
        "patient: a patient counts once; regimen: once per regimen of their first lines; "
        "cycle: once per regimen and cycle."))
    values = LabeledValueOutput(many=True)


class MeasureOutput(serializers.Serializer):
    name = serializers.CharField()
    label_en = serializers.CharField()
    label_zh = serializers.CharField()
    count_columns = serializers.ListField(child=serializers.CharField())
    rates = serializers.ListField(child=serializers.CharField())


class TermOutput(serializers.Serializer):
    code = serializers.CharField()
    label_en = serializers.CharField()
    label_zh = serializers.CharField()
    grades = serializers.ListField(child=serializers.IntegerField())


class LabOutput(serializers.Serializer):
    code = serializers.CharField()
    label_en = serializers.CharField()
    label_zh = serializers.CharField()
    unit = serializers.CharField(help_text="The canonical unit lab bounds are given in.")


class DimensionsOutput(serializers.Serializer):
    dimensions = DimensionOutput(many=True)
    measures = MeasureOutput(many=True)
    max_by = serializers.IntegerField()
    max_lines_counted = serializers.IntegerField()
    max_cycles_counted = serializers.IntegerField()
    terms = TermOutput(many=True, help_text="CTCAE terms an incidence may count.")
    biomarkers = serializers.ListField(child=serializers.CharField(),
                                       help_text="Biomarkers feasibility criteria may name.")
    labs = LabOutput(many=True, help_text="Lab concepts feasibility criteria may name.")


_RELEASED = OpenApiResponse(response=OpenApiTypes.OBJECT, description=(
    "The answer after disclosure control (docs/partner-api.md): its tables of cells, counts "
    "under the minimum cell hidden, the rest rounded or perturbed, totals from the released "
    "cells, rates on hidden counts hidden, and the snapshot time."))


class AggregatesApi(APIView):
    permission_classes = [HasScope]
    required_scope = Scope.AGGREGATES

    @extend_schema(
        operation_id="aggregates_query", tags=["partner"], request=AggregateInput,
        description="Counts of distinct patients (or an adverse event's incidence) per cell of "
                    "0 to 2 dimensions, under disclosure control. Needs the scope "
                    "`aggregates`. A patient counts in the regimens of their first "
                    f"{MAX_LINES_COUNTED} lines and cycles 1 to {MAX_CYCLES_COUNTED} only.",
        responses={200: _RELEASED, **error_responses(*QUERY_ERRORS)})
    def post(self, request: Request) -> Response:
        data = AggregateInput(data=request.data)
        data.is_valid(raise_exception=True)
        spec = data.validated_data
        return Response(_answer(request, endpoint="aggregates", params=spec,
                                compute=lambda snapshot: aggregate_raw(snapshot, spec)))


class AggregateDimensionsApi(APIView):
    permission_classes = [HasScope]
    required_scope = Scope.AGGREGATES

    @extend_schema(
        operation_id="aggregates_dimensions", tags=["partner"],
        description="The dimensions, their values (with English and Chinese labels), the "
                    "measures, the CTCAE terms, biomarkers and lab concepts queries may name. "
                    "Needs the scope `aggregates`.",
        responses={200: DimensionsOutput, **error_responses(401, 403, 429)})
    def get(self, request: Request) -> Response:
        return Response(DimensionsOutput(dimensions_listed()).data)


# -- feasibility --------------------------------------------------------------------------------


class LabCriterionInput(StrictInput):
    concept = TextField(max_length=L.CRITERIA_CODE_MAX_LENGTH,
                        help_text="The lab's LOINC code, e.g. 751-8 (neutrophils).")
    min = FiniteFloatField(required=False, allow_null=True, min_value=-L.LAB_BOUND_ABS_MAX,
                           max_value=L.LAB_BOUND_ABS_MAX, help_text="In the canonical unit.")
    max = FiniteFloatField(required=False, allow_null=True, min_value=-L.LAB_BOUND_ABS_MAX,
                           max_value=L.LAB_BOUND_ABS_MAX, help_text="In the canonical unit.")

    def validate_concept(self, value: str) -> str:
        if not _LOINC.fullmatch(value) or value not in concept_codes(Domain.LAB):
            raise serializers.ValidationError(_("Not a lab concept of the vocabulary."))
        return value

    def validate(self, data: dict) -> dict:
        low, high = data.get("min"), data.get("max")
        if low is not None and high is not None and low > high:
            raise serializers.ValidationError({"max": [_("Below min.")]})
        return {"concept": data["concept"], "min": low, "max": high}


def _checked_list(values: list[str], pattern: re.Pattern, *, upper: bool = True,
                  extra: tuple[str, ...] = ()) -> list[str]:
    out = []
    for raw in values:
        value = raw.strip().upper() if upper else raw.strip()
        if value not in extra and not pattern.fullmatch(value):
            raise serializers.ValidationError(_("%(value)r is not a valid code.") % {
                "value": raw[:L.CRITERIA_CODE_MAX_LENGTH]})
        out.append(value)
    return sorted(set(out))


_CODES = {"max_length": L.PARTNER_VALUES_MAX, "required": False}


class FeasibilityInput(StrictInput):
    cancer = serializers.ListField(
        child=TextField(max_length=L.CRITERIA_CODE_MAX_LENGTH), **_CODES,
        help_text="ICD-10 codes or prefixes of the first diagnosis (C34, C22.0).")
    stage_groups = serializers.ListField(
        child=TextField(max_length=L.CRITERIA_CODE_MAX_LENGTH), **_CODES,
        help_text=f"Main groups ({', '.join(STAGES)}) or groups as recorded (IIIA).")
    biomarkers = serializers.DictField(
        child=TextField(max_length=L.BIOMARKER_VALUE_MAX_LENGTH), required=False,
        help_text=f"Biomarker -> result, e.g. {{\"EGFR\": \"+\"}}; biomarkers: "
                  f"{', '.join(BIOMARKERS)}.")
    min_prior_lines = serializers.IntegerField(min_value=0, max_value=L.PRIOR_LINES_MAX,
                                               required=False)
    max_prior_lines = serializers.IntegerField(min_value=0, max_value=L.PRIOR_LINES_MAX,
                                               required=False)
    labs = serializers.ListField(child=LabCriterionInput(), max_length=L.PARTNER_LABS_MAX,
                                 required=False,
                                 help_text="Bounds on the latest value of lab concepts.")
    site_tiers = serializers.ListField(
        child=serializers.ChoiceField(choices=Site.Tier.choices), **_CODES)
    regions = serializers.ListField(
        child=TextField(max_length=L.PARTNER_VALUE_MAX_LENGTH), **_CODES,
        help_text="Provinces (GET /api/v1/aggregates/dimensions/, dimension region).")

    def validate_cancer(self, value: list[str]) -> list[str]:
        return _checked_list(value, CODE_PATTERN)

    def validate_stage_groups(self, value: list[str]) -> list[str]:
        return _checked_list(value, STAGE_PATTERN, extra=STAGES)

    def validate_biomarkers(self, value: Mapping[str, str]) -> dict[str, str]:
        out = {}
        for name, result in value.items():
            if name not in BIOMARKERS:
                raise serializers.ValidationError(
                    _("Unknown biomarker %(name)r; the biomarkers are %(names)s.") % {
                        "name": str(name)[:L.CRITERIA_CODE_MAX_LENGTH],
                        "names": ", ".join(BIOMARKERS)})
            result = result.strip().upper()
            if not _BIOMARKER_VALUE.fullmatch(result):
                raise serializers.ValidationError(_("%(value)r is not a biomarker result.") % {
                    "value": result[:L.BIOMARKER_VALUE_MAX_LENGTH]})
            out[name] = result
        return dict(sorted(out.items()))

    def validate_site_tiers(self, value: list[str]) -> list[str]:
        return sorted(set(value))

    def validate_regions(self, value: list[str]) -> list[str]:
        known = {v.code for v in dimension_values()["region"]}
        wrong = [v for v in value if v not in known]
        if wrong:
            raise serializers.ValidationError(_("Not a region of the registry: %(values)s.") % {
                "values": ", ".join(repr(v[:L.PARTNER_VALUE_MAX_LENGTH]) for v in wrong[:5])})
        return sorted(set(value))

    def validate(self, data: dict) -> dict:
        low, high = data.get("min_prior_lines"), data.get("max_prior_lines")
        if low is not None and high is not None and low > high:
            raise serializers.ValidationError({"max_prior_lines": [_("Below min_prior_lines.")]})
        return {k: (list(v) if isinstance(v, list) else v) for k, v in sorted(data.items())
                if v not in (None, [], {})}


class FeasibilityApi(APIView):
    permission_classes = [HasScope]
    required_scope = Scope.FEASIBILITY

    @extend_schema(
        operation_id="feasibility_query", tags=["partner"], request=FeasibilityInput,
        description="How many patients meet the criteria, per hospital tier (table "
                    "by_site_tier) and per region (by_region), under disclosure control; "
                    "never per patient or per site. Every criterion narrows (AND), the "
                    "values of one criterion widen (OR). Needs the scope `feasibility`.",
        responses={200: _RELEASED, **error_responses(*QUERY_ERRORS)})
    def post(self, request: Request) -> Response:
        data = FeasibilityInput(data=request.data)
        data.is_valid(raise_exception=True)
        criteria = data.validated_data
        return Response(_answer(request, endpoint="feasibility", params=criteria,
                                compute=lambda snapshot: feasibility_raw(snapshot, criteria)))


