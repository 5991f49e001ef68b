"""Refuse a request carrying a NUL character before any view sees it.

PostgreSQL text cannot hold NUL, so a NUL that reaches a query is a server error; no page of
the registry has a use for one. Forms refuse it too (ProhibitNullCharactersValidator), but
paths and query strings are read raw by views and path converters.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.utils.translation import gettext as _

NUL = "\x00"


def _has_nul(query) -> bool:
    return any(NUL in key or any(NUL in v for v in values) for key, values in query.lists())


class RefuseNulMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        # A form body is read here as the CSRF check reads it anyway (files are not looked at).
        if NUL in request.path_info or _has_nul(request.GET) or (
                request.method == "POST" and _has_nul(request.POST)):
            return HttpResponseBadRequest(
                _("The request contains a NUL character, which no field accepts."),
                content_type="text/plain; charset=utf-8")
        return self.get_response(request)
