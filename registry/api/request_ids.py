"""Request ids: every response carries one in `X-Request-ID` (registry.api.middleware).

A caller (or a proxy in front of the registry) may send its own id to follow a request through
its logs and ours; one that is not 1-64 characters of [A-Za-z0-9._-] is replaced by a new id,
so nothing a caller sends reaches a log line or a header unchecked.
"""

from __future__ import annotations

import re
import uuid

from django.http import HttpRequest

REQUEST_ID_HEADER = "X-Request-ID"
_META_KEY = "HTTP_X_REQUEST_ID"
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")


def request_id_new() -> str:
    return uuid.uuid4().hex


def request_id_accept(incoming: str | None) -> str:
    """The caller's id when it is sane, else a new one."""
    if incoming and REQUEST_ID_PATTERN.fullmatch(incoming):
        return incoming
    return request_id_new()


def request_id_of(request: HttpRequest) -> str:
    """The id of this request (given by RequestIdMiddleware; made here when it did not run,
    as in a request built by a test's RequestFactory)."""
    request_id = getattr(request, "request_id", None)
    if request_id is None:
        request_id = request.request_id = request_id_accept(request.META.get(_META_KEY))
    return request_id
