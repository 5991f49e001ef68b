"""GET /api/v1/privacy-budget/: how much of the partner's privacy budget is spent
(docs/partner-api.md, "Disclosure control and differencing defence")."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from registry.api.schema import error_responses
from registry.api.scopes import Scope
from research.api.views import HasAnyScope
from research.services.partner_queries import partner_budget


@extend_schema_serializer(component_name="PrivacyBudget")
class PrivacyBudgetOutput(serializers.Serializer):
    spent = serializers.FloatField(help_text="Epsilon charged within the window.")
    limit = serializers.FloatField(help_text="The most the window's charges may add up to.")
    remaining = serializers.FloatField(help_text="limit - spent (never below 0).")
    epsilon_per_query = serializers.FloatField(
        help_text="What a query of sensitivity 1 costs; a query costs this times its "
                  "sensitivity. A repeat of an answered query costs nothing.")
    window_days = serializers.IntegerField(help_text="A charge counts for this many days.")
    next_expiry_at = serializers.DateTimeField(
        allow_null=True, help_text="When the oldest charge in the window expires (null when "
                                   "nothing is spent).")
    resets_at = serializers.DateTimeField(
        allow_null=True, help_text="When every charge now in the window has expired (null "
                                   "when nothing is spent).")


class PrivacyBudgetApi(APIView):
    permission_classes = [HasAnyScope]
    required_scope = (Scope.AGGREGATES, Scope.FEASIBILITY)

    @extend_schema(operation_id="privacy_budget", tags=["partner"],
                   description="The caller's privacy budget: what aggregate and feasibility "
                               "queries have spent in the window and when it comes back. "
                               "Needs the scope `aggregates` or `feasibility`.",
                   responses={200: PrivacyBudgetOutput, **error_responses(401, 403)})
    def get(self, request: Request) -> Response:
        return Response(PrivacyBudgetOutput(partner_budget(request.user)).data)
