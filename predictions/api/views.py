"""The risk-model endpoints of the partner API (docs/partner-api-scoring.md), scope `scoring`.

Each view finds the risk model (an unknown name is a 404) and its champion (none: 409
no_champion; an artifact whose checksum differs: 503 model_unavailable), validates its input,
calls one selector and answers. Scoring writes nothing: a partner's cycles are not registry
cycles.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from predictions.api.serializers import (
    SCORE_INPUT_DOC,
    CardOutput,
    RiskModelOutput,
    SchemaOutput,
    ScoreInput,
    ScoreOutput,
)
from predictions.ml.definitions import DEFINITIONS
from predictions.selectors.scoring import (
    REF_MAX_LENGTH,
    SCORE_BATCH_MAX,
    champion_served,
    cycles_frame,
    cycles_score,
    features_described,
    model_card,
    risk_model_of,
    risk_models_listed,
    version_described,
)
from registry.api.permissions import HasScope
from registry.api.schema import ErrorSerializer, error_responses
from registry.api.scopes import Scope

RISK_MODEL = OpenApiParameter("risk_model", OpenApiTypes.STR, OpenApiParameter.PATH,
                              enum=list(DEFINITIONS), description="The risk model's key.")
TAGS = ["risk models"]


def _champion_errors() -> dict[int, OpenApiResponse]:
    """404 (no such risk model), 409 no_champion and 503 model_unavailable."""
    return {
        **error_responses(404),
        409: OpenApiResponse(ErrorSerializer, description=(
            "The risk model has no champion version yet (no_champion).")),
        **error_responses(503),
    }


class RiskModelListApi(APIView):
    permission_classes = [HasScope]
    required_scope = Scope.SCORING

    @extend_schema(operation_id="risk_models_list", tags=TAGS,
                   description="Every risk model with its champion's version number (null "
                               "while it has none). The whole list, not paged.",
                   responses={200: RiskModelOutput(many=True), **error_responses(401, 403)})
    def get(self, request: Request) -> Response:
        return Response(RiskModelOutput(risk_models_listed(), many=True).data)


class LenientJSONParser(JSONParser):
    """JSON that may hold NaN and Infinity, so that such a value is refused by the input's
    validation with its cycle index and field rather than as an unreadable body (every
    number is checked to be finite: predictions.selectors.scoring.cycles_frame)."""

    strict = False


class RiskModelScoreApi(APIView):
    permission_classes = [HasScope]
    required_scope = Scope.SCORING
    parser_classes = [LenientJSONParser]

    @extend_schema(
        operation_id="risk_models_score", tags=TAGS, parameters=[RISK_MODEL],
        description=(
            f"Score 1 to {SCORE_BATCH_MAX} cycles with the risk model's champion. Each cycle "
            "is an object holding every feature of the champion's schema (GET schema/: names, "
            "types, ranges, categories; null only where the schema allows it) and optionally "
            f"`ref`, your reference of at most {REF_MAX_LENGTH} characters, echoed back. "
            "Unknown fields, missing features, wrong types, non-finite or out-of-range numbers "
            "and unknown categories are refused (400) with the cycle's index and the field "
            "(`cycles.3.age`). Scores are in the request's order; nothing is stored."),
        request=SCORE_INPUT_DOC,
        responses={200: ScoreOutput, **error_responses(400, 401, 403, 413, 415),
                   **_champion_errors()})
    def post(self, request: Request, risk_model: str) -> Response:
        risk_model_of(risk_model)
        data = ScoreInput(data=request.data)
        data.is_valid(raise_exception=True)
        served = champion_served(risk_model)
        frame, refs = cycles_frame(served.schema, data.validated_data["cycles"])
        return Response(ScoreOutput({"model": version_described(served.version),
                                     "scores": cycles_score(served, frame, refs)}).data)


class RiskModelSchemaApi(APIView):
    permission_classes = [HasScope]
    required_scope = Scope.SCORING

    @extend_schema(operation_id="risk_models_schema", tags=TAGS, parameters=[RISK_MODEL],
                   description="The champion's feature schema: what a cycle sent to score/ "
                               "holds.",
                   responses={200: SchemaOutput, **error_responses(401, 403),
                              **_champion_errors()})
    def get(self, request: Request, risk_model: str) -> Response:
        served = champion_served(risk_model)
        return Response(SchemaOutput({
            "risk_model": risk_model, "version": version_described(served.version),
            "features": features_described(served.schema), "batch_max": SCORE_BATCH_MAX,
            "ref_max_length": REF_MAX_LENGTH}).data)


class RiskModelCardApi(APIView):
    permission_classes = [HasScope]
    required_scope = Scope.SCORING

    @extend_schema(operation_id="risk_models_card", tags=TAGS, parameters=[RISK_MODEL],
                   description="The champion's model card: intended and out-of-scope use, "
                               "target, features, tiers and actions, algorithm, training "
                               "snapshot, leave-site-out metrics, per-site performance under "
                               "disclosure control (anonymous sites, small sites hidden, "
                               "counts rounded), calibration, and the champion's moves.",
                   responses={200: CardOutput, **error_responses(401, 403),
                              **_champion_errors()})
    def get(self, request: Request, risk_model: str) -> Response:
        return Response(CardOutput(model_card(risk_model)).data)
