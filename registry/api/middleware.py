"""Two middlewares of the API (both first in settings.MIDDLEWARE, so they see every response):

- RequestIdMiddleware gives every request an id (the caller's X-Request-ID when sane, else a
  new one) as `request.request_id`, and every response the X-Request-ID header;
- ApiErrorMiddleware keeps the API's promise of one error body (registry.api.errors) for what
  Django answers itself under /api/: an unknown path (404), a server error (500, logged by
  Django as always), a refusal by another middleware. It also refuses a body larger than
  DATA_UPLOAD_MAX_MEMORY_SIZE with 413 before anything reads it: DRF's parsers read the
  stream without Django's size check.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils import translation

from registry.api import API_PATH_PREFIX
from registry.api.errors import error_body, error_response
from registry.api.request_ids import REQUEST_ID_HEADER, request_id_of

logger = logging.getLogger(__name__)

# A body of a refusal another middleware wrote as plain text (RefuseNulMiddleware) is its
# message, when it is this short.
_PLAIN_MESSAGE_MAX = 500


class RequestIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = request_id_of(request)
        response = self.get_response(request)
        response[REQUEST_ID_HEADER] = request_id
        return response


def _media_type(value: str) -> str:
    return value.split(";")[0].strip().lower()


def _is_json(response: HttpResponse) -> bool:
    media = _media_type(response.get("Content-Type", ""))
    return media == "application/json" or media.endswith("+json")


def _body_too_large(request: HttpRequest) -> bool:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    # Django applies the limit to a multipart body without its files, while parsing it.
    if limit is None or _media_type(request.META.get("CONTENT_TYPE", "")).startswith(
            "multipart/"):
        return False
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0) > limit
    except ValueError:
        return False


def _plain_message(response: HttpResponse) -> str | None:
    if (response.streaming or _media_type(response.get("Content-Type", "")) != "text/plain"
            or len(response.content) > _PLAIN_MESSAGE_MAX):
        return None
    return response.content.decode(response.charset or "utf-8", errors="replace").strip() or None


def _language_of(request: HttpRequest) -> translation.override:
    """The request's language (LocaleMiddleware's choice, or the one it would make when the
    request did not reach it), so that no earlier request's language is used."""
    return translation.override(getattr(request, "LANGUAGE_CODE", None)
                                or translation.get_language_from_request(request))


class ApiErrorMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path_info.startswith(API_PATH_PREFIX):
            return self.get_response(request)
        if _body_too_large(request):
            with _language_of(request):
                return error_response(request, status=413)
        response = self.get_response(request)
        if response.status_code >= 400 and not _is_json(response):
            with _language_of(request):
                self._rewrite(request, response)
        return response

    def _rewrite(self, request: HttpRequest, response: HttpResponse) -> None:
        """The error body in place of Django's page, keeping the response's headers (the
        security headers, Allow, WWW-Authenticate) and cookies."""
        if response.status_code >= 500:
            logger.error("Server error %s on %s %s, request id %s", response.status_code,
                         request.method, request.path, request_id_of(request))
        body = error_body(request, status=response.status_code,
                          message=_plain_message(response))
        content = json.dumps(body).encode()
        if response.streaming:
            response.streaming_content = [content]
        else:
            response.content = content
        response["Content-Type"] = "application/json"
        if response.has_header("Content-Length"):
            response["Content-Length"] = str(len(content))
        if response.has_header("Content-Disposition"):
            del response["Content-Disposition"]


# The headers of a request counted by the rate limits (registry.api.throttling).
RATE_LIMIT_HEADER = "X-RateLimit-Limit"
RATE_REMAINING_HEADER = "X-RateLimit-Remaining"


class RateLimitHeadersMiddleware:
    """`X-RateLimit-Limit` and `X-RateLimit-Remaining` on every response to a request the rate
    limits counted (registry.api.throttling leaves its decision on the request), refusals
    included."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        decision = getattr(request, "rate_limit", None)
        if decision is not None:
            response[RATE_LIMIT_HEADER] = str(decision.limit)
            response[RATE_REMAINING_HEADER] = str(decision.remaining)
        return response
