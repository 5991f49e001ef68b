"""The one error body of the API, and the exception handler that writes it (docs/api.md).

Every API response with a status of 400 or more has this body:

    {"error": {"status": 400, "code": "validation_failed", "message": "...",
               "fields": {"name": ["..."]}},
     "request_id": "..."}

`code` is one of ERROR_KINDS (stable, for programs); `message` is for people (in the request's
language); `fields` maps an input field (dotted for nested input, "__all__" for the input as a
whole) to its messages, empty unless the input was refused; `request_id` is also the
response's X-Request-ID header.

`exception_handler` (DRF's EXCEPTION_HANDLER) maps DRF's exceptions, Django's Http404,
PermissionDenied, ValidationError and RequestDataTooBig, and the registry's domain errors
(registry.errors): an endpoint lets them propagate. Anything else propagates to Django, whose
500 page registry.api.middleware.ApiErrorMiddleware turns into this body, as it does every
non-JSON error Django answers under /api/ (unknown paths, bodies too large).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import connections
from django.http import Http404, HttpRequest, JsonResponse
from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions

from registry.api.request_ids import request_id_of
from registry.errors import (
    BudgetExhausted,
    NotPermitted,
    RegistryError,
    StaleEdit,
    ValidationFailed,
)

# The key of messages about the input as a whole (Django's, registry.errors', and DRF's
# NON_FIELD_ERRORS_KEY in settings).
ALL_FIELDS = "__all__"


@dataclass(frozen=True)
class ErrorKind:
    code: str
    status: int
    message: str | Promise  # when the cause gives none more precise


# Every code the API answers with. The first kind of each status stands for that status when
# nothing more precise is known (an error Django answered itself).
ERROR_KINDS: tuple[ErrorKind, ...] = (
    ErrorKind("bad_request", 400, _("The request is not valid.")),
    ErrorKind("malformed_request", 400, _("The request body could not be read as JSON.")),
    ErrorKind("validation_failed", 400, _("The input is not valid: see the fields.")),
    ErrorKind("not_authenticated", 401, _(
        "Authentication is needed: send an API token as 'Authorization: Bearer <token>'.")),
    ErrorKind("authentication_failed", 401, _(
        "The API token was refused: it is mistyped, unknown, expired or revoked, or its "
        "account is inactive.")),
    ErrorKind("permission_denied", 403, _("You may not do this.")),
    ErrorKind("not_found", 404, _("Nothing is found at this address.")),
    ErrorKind("method_not_allowed", 405, _("This method is not allowed here.")),
    ErrorKind("not_acceptable", 406, _("None of the formats the request accepts is offered.")),
    ErrorKind("stale_edit", 409, _("Someone else changed this after you read it.")),
    ErrorKind("no_champion", 409, _("This risk model has no champion version yet, so nothing "
                                    "can be scored or described; retry after a training run.")),
    ErrorKind("request_too_large", 413, _("The request body is larger than the registry "
                                          "accepts.")),
    ErrorKind("unsupported_media_type", 415, _("The request body's media type is not "
                                               "accepted; send JSON.")),
    ErrorKind("throttled", 429, _("Too many requests; retry later.")),
    ErrorKind("privacy_budget_exhausted", 429, _(
        "The query was refused: it would exceed your privacy budget; see Retry-After.")),
    ErrorKind("server_error", 500, _("The server failed to answer this request. Quote its "
                                     "request id when reporting it.")),
    ErrorKind("service_unavailable", 503, _("The service cannot answer just now; retry "
                                            "later.")),
    ErrorKind("model_unavailable", 503, _("The risk model's stored artifact was refused (its "
                                          "checksum differs from the recorded one); it is not "
                                          "served until an administrator acts.")),
)
ERRORS: dict[str, ErrorKind] = {kind.code: kind for kind in ERROR_KINDS}
ERROR_FOR_STATUS: dict[int, ErrorKind] = {}
for _kind in ERROR_KINDS:
    ERROR_FOR_STATUS.setdefault(_kind.status, _kind)
# The code of a status no kind names (a 502 of a proxy, say).
OTHER_CODE = "error"
# Every code an error body may carry (the schema's ErrorCode).
ERROR_CODES: list[str] = sorted({kind.code for kind in ERROR_KINDS} | {OTHER_CODE})

# DRF's exceptions, subclasses before their bases.
_DRF_CODES: tuple[tuple[type[exceptions.APIException], str], ...] = (
    (exceptions.ParseError, "malformed_request"),
    (exceptions.ValidationError, "validation_failed"),
    (exceptions.NotAuthenticated, "not_authenticated"),
    (exceptions.AuthenticationFailed, "authentication_failed"),
    (exceptions.PermissionDenied, "permission_denied"),
    (exceptions.NotFound, "not_found"),
    (exceptions.MethodNotAllowed, "method_not_allowed"),
    (exceptions.NotAcceptable, "not_acceptable"),
    (exceptions.UnsupportedMediaType, "unsupported_media_type"),
    (exceptions.Throttled, "throttled"),
)
_DOMAIN_CODES: tuple[tuple[type[RegistryError], str], ...] = (
    (ValidationFailed, "validation_failed"),
    (NotPermitted, "permission_denied"),
    (StaleEdit, "stale_edit"),
    (BudgetExhausted, "privacy_budget_exhausted"),
)


class ErrorResponse(JsonResponse):
    """A response carrying the error body. `data` holds the body, as on DRF's Response."""

    def __init__(self, data: dict[str, Any], *, headers: dict[str, str] | None = None) -> None:
        super().__init__(data, status=data["error"]["status"], headers=headers)
        self.data = data


def fields_summary(fields: dict[str, list[str]]) -> str:
    """The messages of `fields` in one line ("name: ...; scopes: ..."), as a `message`."""
    return "; ".join(message if field == ALL_FIELDS else f"{field}: {message}"
                     for field, messages in fields.items() for message in messages)


def _status_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:  # a status outside the standard (a proxy's 499, say)
        return "Error"


def error_body(request: HttpRequest, *, status: int, code: str | None = None,
               message: str | Promise | None = None,
               fields: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """The error body. Without a code or message, those of the status (ERROR_FOR_STATUS)."""
    kind = ERRORS.get(code or "") or ERROR_FOR_STATUS.get(status)
    if message is None:
        message = kind.message if kind else _status_phrase(status)
    return {
        "error": {
            "status": status,
            "code": code or (kind.code if kind else OTHER_CODE),
            "message": str(message),
            "fields": {str(k): [str(m) for m in v] for k, v in (fields or {}).items()},
        },
        "request_id": request_id_of(getattr(request, "_request", request)),
    }


def error_response(request: HttpRequest, *, status: int, code: str | None = None,
                   message: str | Promise | None = None,
                   fields: dict[str, list[str]] | None = None,
                   headers: dict[str, str] | None = None) -> ErrorResponse:
    return ErrorResponse(error_body(request, status=status, code=code, message=message,
                                    fields=fields), headers=headers)


def detail_fields(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    """DRF's error detail (dicts and lists, nested for nested input) as field -> messages,
    nested fields dotted: {"items": [{}, {"dose": ["..."]}]} -> {"items.1.dose": ["..."]}."""
    if isinstance(detail, dict):
        out: dict[str, list[str]] = {}
        for key, value in detail.items():
            for field, messages in detail_fields(value, f"{prefix}.{key}" if prefix
                                                 else str(key)).items():
                out.setdefault(field, []).extend(messages)
        return out
    if isinstance(detail, list):
        if all(not isinstance(item, dict | list) for item in detail):
            return {prefix or ALL_FIELDS: [str(item) for item in detail]} if detail else {}
        out = {}
        for index, item in enumerate(detail):
            for field, messages in detail_fields(item, f"{prefix}.{index}" if prefix
                                                 else str(index)).items():
                out.setdefault(field, []).extend(messages)
        return out
    return {prefix or ALL_FIELDS: [str(detail)]}


def _roll_back_request() -> None:
    """As DRF's own handler does: a request wrapped in a transaction (ATOMIC_REQUESTS) that
    ends in an error writes nothing. (Not DRF's set_rollback: rest_framework.views imports
    the authentication classes, which import this module.)"""
    for connection in connections.all(initialized_only=True):
        if connection.settings_dict["ATOMIC_REQUESTS"] and connection.in_atomic_block:
            connection.set_rollback(True)


def _code_of(exc: Exception, table) -> str | None:
    return next((code for cls, code in table if isinstance(exc, cls)), None)


def _api_exception_response(exc: exceptions.APIException, request) -> ErrorResponse:
    status = exc.status_code
    code = _code_of(exc, _DRF_CODES)
    if code is None or ERRORS[code].status != status:
        # DRF answers a missing login with 403 when no authenticator sends a challenge.
        code = None
    fields: dict[str, list[str]] = {}
    if isinstance(exc, exceptions.ValidationError):
        fields = detail_fields(exc.detail)
        message = fields_summary(fields) or None
    elif isinstance(exc.detail, dict | list):
        message = fields_summary(detail_fields(exc.detail))
    elif code is not None and str(exc.detail) == str(exc.default_detail):
        message = ERRORS[code].message  # DRF's generic words: the registry's own
    else:
        message = str(exc.detail)
    headers = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None) is not None:
        headers["Retry-After"] = str(math.ceil(exc.wait))
    return error_response(request, status=status, code=code, message=message, fields=fields,
                          headers=headers)


def exception_handler(exc: Exception, context: dict[str, Any]) -> ErrorResponse | None:
    """DRF's EXCEPTION_HANDLER: the error body for every exception an endpoint may raise on
    purpose; None (a server error, logged by Django) for any other."""
    request = context["request"]
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(*exc.args)
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(*exc.args)
    if isinstance(exc, exceptions.APIException):
        response = _api_exception_response(exc, request)
    elif isinstance(exc, RegistryError):
        # An app's own domain error may name its kind (`code`, one of ERROR_KINDS).
        own = getattr(exc, "code", None)
        code = _code_of(exc, _DOMAIN_CODES) or (own if own in ERRORS else "bad_request")
        fields = exc.errors if isinstance(exc, ValidationFailed) else {}
        headers = ({"Retry-After": str(exc.retry_after)} if isinstance(exc, BudgetExhausted)
                   else None)
        response = error_response(request, status=ERRORS[code].status, code=code,
                                  message=exc.summary() or None, fields=fields,
                                  headers=headers)
    elif isinstance(exc, DjangoValidationError):
        fields = (exc.message_dict if hasattr(exc, "error_dict")
                  else {ALL_FIELDS: exc.messages})
        response = error_response(request, status=400, code="validation_failed",
                                  message=fields_summary(fields), fields=fields)
    elif isinstance(exc, RequestDataTooBig):
        response = error_response(request, status=413, code="request_too_large")
    else:
        return None
    _roll_back_request()
    return response
