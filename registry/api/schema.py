"""OpenAPI pieces for endpoint authors: the error body component, `error_responses`, and the
bearer security scheme (drf-spectacular; docs/api.md, "Schema").

    @extend_schema(responses={200: Output, **error_responses(400, 401, 403, 404)})
    def post(self, request): ...

documents each status the endpoint can return with the one error body of registry.api.errors.
"""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiResponse, extend_schema_serializer
from rest_framework import serializers

from registry.api.errors import ERROR_CODES
from registry.api.request_ids import REQUEST_ID_HEADER

# What each status means for a caller of any endpoint (an endpoint may say more).
STATUS_DESCRIPTIONS: dict[int, str] = {
    400: "The request is malformed (malformed_request) or its input invalid (validation_failed,"
         " with the messages by field).",
    401: "No valid API token (not_authenticated, authentication_failed).",
    403: "The token or the user's roles do not allow this (permission_denied).",
    404: "Not found, or not visible to the caller (not_found).",
    405: "The method is not allowed here (method_not_allowed).",
    406: "None of the formats the request accepts is offered (not_acceptable).",
    409: "Someone else changed the record after the caller read it (stale_edit).",
    413: "The request body is too large (request_too_large).",
    415: "The request body is not JSON (unsupported_media_type).",
    429: "Too many requests, or a partner query would exceed the privacy budget; see "
         "Retry-After (throttled, privacy_budget_exhausted).",
    500: "The server failed; quote the request id when reporting it (server_error).",
    503: "The resource cannot be served now (model_unavailable); retry later.",
}


@extend_schema_serializer(component_name="ErrorDetail")
class ErrorDetailSerializer(serializers.Serializer):
    status = serializers.IntegerField(help_text="The HTTP status, repeated.")
    code = serializers.ChoiceField(
        choices=ERROR_CODES,
        help_text="Stable code of the error, for programs.")
    message = serializers.CharField(help_text="What went wrong, for people, in the request's "
                                              "language.")
    fields = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        help_text='Messages by input field (dotted for nested input, "__all__" for the input '
                  "as a whole); empty unless input was refused.")


@extend_schema_serializer(component_name="Error")
class ErrorSerializer(serializers.Serializer):
    """The body of every API response with a status of 400 or more."""

    error = ErrorDetailSerializer()
    request_id = serializers.CharField(
        help_text=f"The request's id, also in the {REQUEST_ID_HEADER} header.")


def error_responses(*statuses: int) -> dict[int, OpenApiResponse]:
    """The `responses` entries of `@extend_schema` for these error statuses, each with the
    error body."""
    unknown = [s for s in statuses if s not in STATUS_DESCRIPTIONS]
    if unknown:
        raise ValueError(f"No description of status(es) {unknown}; add them to "
                         "STATUS_DESCRIPTIONS.")
    return {status: OpenApiResponse(response=ErrorSerializer,
                                    description=STATUS_DESCRIPTIONS[status])
            for status in statuses}


class BearerTokenScheme(OpenApiAuthenticationExtension):
    """The security scheme of registry.api.authentication.BearerTokenAuthentication."""

    target_class = "registry.api.authentication.BearerTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "rwe_<prefix>_<secret>",
            "description": "An API token (docs/api.md): `Authorization: Bearer <token>`.",
        }

