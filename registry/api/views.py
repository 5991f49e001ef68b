"""The API's own endpoints: the caller (`me/`), the OpenAPI schema and its Swagger UI."""

from __future__ import annotations

from csp.decorators import csp_update
from django.conf import settings
from django.utils.decorators import method_decorator
from django.utils.translation import gettext as _
from drf_spectacular.utils import extend_schema, extend_schema_serializer
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from registry.access import user_roles
from registry.api.schema import error_responses
from registry.api.scopes import Scope
from registry.models import ApiToken, Role

# Swagger UI's stylesheet draws its icons as data: images; nothing else is relaxed.
DOCS_CSP_UPDATE = {"img-src": ["'self'", "data:"]}


class MeView(APIView):
    """Who the caller is: username, roles, and for a token its scopes and expiry."""

    permission_classes = [IsAuthenticated]

    @extend_schema_serializer(component_name="Me")
    class Output(serializers.Serializer):
        username = serializers.CharField()
        roles = serializers.ListField(child=serializers.ChoiceField(choices=Role.choices))
        authenticated_by = serializers.ChoiceField(choices=["token", "session"])
        scopes = serializers.ListField(
            child=serializers.ChoiceField(choices=Scope.choices), allow_null=True,
            help_text="The token's scopes; null for a login session (judged by its roles).")
        expires_at = serializers.DateTimeField(
            allow_null=True, help_text="When the token expires; null for a session or a token "
                                       "without expiry.")

    @extend_schema(operation_id="me", tags=["account"],
                   responses={200: Output, **error_responses(401)})
    def get(self, request: Request) -> Response:
        token = request.auth if isinstance(request.auth, ApiToken) else None
        return Response(self.Output({
            "username": request.user.get_username(),
            "roles": sorted(user_roles(request.user)),
            "authenticated_by": "token" if token else "session",
            "scopes": sorted(token.scopes) if token else None,
            "expires_at": token.expires_at if token else None,
        }).data)


def _refuse_unknown_language(request: Request) -> None:
    """drf-spectacular renders in any `?lang=`; only the registry's languages are taken (an
    arbitrary one would be kept in Django's translation cache for the process's life)."""
    lang = request.query_params.get("lang")
    if lang is not None and lang not in dict(settings.LANGUAGES):
        raise ValidationError({"lang": [_("Unknown language; use one of %(languages)s.") % {
            "languages": ", ".join(dict(settings.LANGUAGES))}]})


class SchemaView(SpectacularAPIView):
    """The OpenAPI 3 schema: YAML, or JSON with `?format=json` or `Accept:
    application/vnd.oai.openapi+json`."""

    @extend_schema(exclude=True)
    def get(self, request: Request, *args, **kwargs) -> Response:
        _refuse_unknown_language(request)
        return super().get(request, *args, **kwargs)

    def _get_version_parameter(self, request: Request) -> None:
        # The version is the URL's (/api/v1/); a `?version=` would only reach a header.
        return None


@method_decorator(csp_update(DOCS_CSP_UPDATE), name="dispatch")
class DocsView(SpectacularSwaggerSplitView):
    """Swagger UI from the offline assets of drf-spectacular-sidecar (no inline script)."""

    url_name = "api:schema"
    template_name = "api/swagger_ui.html"

    @extend_schema(exclude=True)
    def get(self, request: Request, *args, **kwargs) -> Response:
        _refuse_unknown_language(request)
        return super().get(request, *args, **kwargs)
