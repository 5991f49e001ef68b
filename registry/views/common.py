"""Small helpers shared by the views: the health check, ids read from query strings and forms,
and redirects that stay on the registry's own pages."""

from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, HttpResponseRedirect, JsonResponse
from django.shortcuts import redirect
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _

from registry import limits

# The largest id a bigint primary key holds; a larger "id" names no row.
MAX_ID = 2**63 - 1


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness for the container health check: the database answers."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})


def id_param(value: str | None) -> int | None:
    """An id from a query string or form ("12"), or None when it is missing or not an id, so
    that `?term=abc` finds nothing instead of failing."""
    value = (value or "").strip()
    if not value.isascii() or not value.isdigit():
        return None
    number = int(value)
    return number if 0 < number <= MAX_ID else None


def ids_param(values: list[str]) -> list[int]:
    return [i for i in map(id_param, values) if i is not None]


def redirect_back(request: HttpRequest, fallback: str) -> HttpResponseRedirect:
    """Back to the page the request came from when it is one of the registry's own, else to
    `fallback` (a URL name): a forged Referer never sends a user elsewhere."""
    target = request.META.get("HTTP_REFERER") or ""
    if target and url_has_allowed_host_and_scheme(
            target, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        return redirect(target)
    return redirect(fallback)


def search_too_long() -> JsonResponse:
    """The answer of a search endpoint to a query longer than any word the registry holds."""
    return JsonResponse({"results": [], "error": _(
        "The search text is at most %(n)d characters.") % {"n": limits.SEARCH_MAX_LENGTH}},
        status=400)
