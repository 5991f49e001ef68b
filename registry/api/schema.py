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
from registry.api.middleware import RATE_LIMIT_HEADER, RATE_REMAINING_HEADER
from registry.api.request_ids import REQUEST_ID_HEADER

# What each status means for a caller of any endpoint (an endpoint may say more).
STATUS_DESCRIPTIONS: dict[int, str] = {
    400: "The request is malformed (malformed_request), its input invalid (validation_failed,"
         " with the messages by field), or it holds a NUL character anywhere (bad_request).",
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
    503: "The rate limits cannot be checked just now, so token requests are refused "
         "(service_unavailable), or the resource cannot be served now (model_unavailable); "
         "see Retry-After where given.",
}
# What every operation may answer, whatever its own declaration says (rate_limit_responses_add).
RATE_LIMIT_STATUSES = (429, 503)
# Refused before any endpoint reads the request: a NUL character anywhere in it
# (registry.middleware.RefuseNulMiddleware), whatever the endpoint takes.
ANY_REQUEST_STATUSES = (400,)
_OPERATION_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch",
                                "trace"})


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



def _header(description: str) -> dict:
    return {"schema": {"type": "integer", "minimum": 0}, "description": description}


def rate_limit_responses_add(result: dict, generator, request, public) -> dict:
    """drf-spectacular postprocessing hook: every operation documents 429 and 503 of the rate
    limits (registry/api/throttling.py) with the error body and Retry-After, and its other
    responses the X-RateLimit headers, so that no endpoint can forget them."""
    error_ref = {"$ref": "#/components/schemas/Error"}
    counted = {
        RATE_LIMIT_HEADER: _header("Requests allowed in the window of this endpoint's class."),
        RATE_REMAINING_HEADER: _header("Requests left in the window."),
    }
    for item in result.get("paths", {}).values():
        for method, operation in item.items():
            if method not in _OPERATION_METHODS:
                continue
            responses = operation.setdefault("responses", {})
            for response in responses.values():
                response.setdefault("headers", {}).update(counted)
            for status in ANY_REQUEST_STATUSES:
                responses.setdefault(str(status), {
                    "description": STATUS_DESCRIPTIONS[status],
                    "content": {"application/json": {"schema": error_ref}},
                })
            for status in RATE_LIMIT_STATUSES:
                response = responses.setdefault(str(status), {
                    "description": STATUS_DESCRIPTIONS[status],
                    "content": {"application/json": {"schema": error_ref}},
                })
                # Also on an endpoint that declares the status itself (a privacy budget's 429).
                response.setdefault("headers", {})["Retry-After"] = _header(
                    "Seconds to wait before retrying.")
    return result
