"""Rate limits of the API, per token (per user for a login session), atomic (docs/api.md).

DRF's own throttles read a history from the cache, decide in Python and write it back: two
concurrent requests both read "9 of 10" and both pass. Here the whole decision is one Lua
script run by Redis (a sliding window kept in a sorted set, timed by Redis's own clock), so
requests of many web processes are counted in one place and no burst of concurrent requests
can pass the limit.

- Limits are per throttle class: an endpoint whose scope names a class in
  settings.API_RATE_LIMITS (scoring, aggregates, feasibility) is counted against that class,
  every other endpoint against "default"; a view may name its class with `throttle_scope`.
  Each class has its own counter per caller.
- The caller is the token (its prefix: random, never reused), else the logged-in user, else
  the client address (the public schema and docs).
- Every counted response says `X-RateLimit-Limit` and `X-RateLimit-Remaining`
  (registry.api.middleware.RateLimitHeadersMiddleware); a refused one is a 429 with
  `Retry-After`, the seconds until the oldest request in the window leaves it.
- Redis unreachable: a token request is refused with 503 (fail closed: the partners' API is
  not left unlimited because a server is down) and the failure is logged; a login session or
  an anonymous request (the schema) is let through, logged.
- Without a Redis URL (`make demo`, eager mode), one process counts in memory under a lock:
  as exact, but per process.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

import redis
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _
from redis.backoff import NoBackoff
from redis.retry import Retry
from rest_framework import exceptions
from rest_framework.throttling import BaseThrottle

from registry.models import ApiToken

if TYPE_CHECKING:  # rest_framework.views imports this module (DEFAULT_THROTTLE_CLASSES)
    from rest_framework.request import Request
    from rest_framework.views import APIView

logger = logging.getLogger(__name__)

DEFAULT_CLASS = "default"
# The attribute of the Django request that carries the counted state to the middleware.
STATE_ATTRIBUTE = "rate_limit"
# How long a caller refused for Redis being down is told to wait.
UNAVAILABLE_RETRY_SECONDS = 30
# Redis is on the request path: a slow one refuses quickly rather than holding a worker.
REDIS_TIMEOUT_SECONDS = 0.5

_UNITS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60,
          "h": 3600, "hour": 3600, "d": 86400, "day": 86400}
_RATE_PATTERN = re.compile(r"\s*(?P<limit>\d+)\s*/\s*(?P<count>\d*)\s*(?P<unit>[a-z]+)\s*")


@dataclass(frozen=True)
class Rate:
    limit: int
    window_seconds: int

    @classmethod
    def parse(cls, text: str) -> Rate:
        """'120/min', '10/30s', '1000/day' (the number before the unit is optional)."""
        match = _RATE_PATTERN.fullmatch(text or "")
        if not match or match["unit"] not in _UNITS:
            raise ImproperlyConfigured(
                f"Rate {text!r} is not <requests>/<period>, e.g. 120/min or 10/30s; units "
                f"{', '.join(_UNITS)}.")
        window = int(match["count"] or 1) * _UNITS[match["unit"]]
        limit = int(match["limit"])
        if limit < 1 or window < 1:
            raise ImproperlyConfigured(f"Rate {text!r} allows nothing.")
        return cls(limit=limit, window_seconds=window)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    retry_after: int  # seconds; 0 when allowed


def rates() -> dict[str, Rate]:
    """settings.API_RATE_LIMITS parsed (read per request: tests and operators change it)."""
    configured = settings.API_RATE_LIMITS
    if DEFAULT_CLASS not in configured:
        raise ImproperlyConfigured(f"API_RATE_LIMITS needs a {DEFAULT_CLASS!r} rate.")
    return {name: Rate.parse(text) for name, text in configured.items()}


def throttle_class_of(view: APIView, method: str, known: Mapping[str, Rate]) -> str:
    """The class a request to `view` is counted against: the view's `throttle_scope`, else its
    required scope when a class of that name is configured, else the default."""
    named = getattr(view, "throttle_scope", None)
    if named:
        return named if named in known else DEFAULT_CLASS
    required = getattr(view, "required_scope", None)
    if isinstance(required, Mapping):
        required = required.get(method) or (required.get("GET") if method == "HEAD" else None)
    if isinstance(required, str) and required in known:
        return str(required)
    return DEFAULT_CLASS


# The sliding window: drop what left the window, count, admit (recording this request) or
# answer how long until the oldest request leaves. Microseconds of Redis's clock.
_SLIDING_WINDOW_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000))
  return {1, limit - count - 1, 0}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, 0, tonumber(oldest[2]) + window - now}
"""


@cache
def _redis_script(url: str):
    # One attempt: while Redis is down each token request is refused at once, not retried.
    client = redis.Redis.from_url(url, socket_timeout=REDIS_TIMEOUT_SECONDS,
                                  socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
                                  retry=Retry(NoBackoff(), 0))
    return client.register_script(_SLIDING_WINDOW_LUA)


def _redis_hit(url: str, key: str, rate: Rate) -> Decision:
    allowed, remaining, wait_us = _redis_script(url)(
        keys=[key], args=[rate.window_seconds * 1_000_000, rate.limit, uuid.uuid4().hex])
    return Decision(allowed=bool(allowed), limit=rate.limit, remaining=int(remaining),
                    retry_after=0 if allowed else max(1, math.ceil(int(wait_us) / 1_000_000)))


class _LocalWindows:
    """The same sliding window in this process's memory, for running without Redis."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hits: dict[str, deque[float]] = {}

    def hit(self, key: str, rate: Rate) -> Decision:
        now = time.monotonic()
        with self._lock:
            hits = self._hits.setdefault(key, deque())
            while hits and hits[0] <= now - rate.window_seconds:
                hits.popleft()
            if len(hits) < rate.limit:
                hits.append(now)
                return Decision(True, rate.limit, rate.limit - len(hits), 0)
            wait = hits[0] + rate.window_seconds - now
            return Decision(False, rate.limit, 0, max(1, math.ceil(wait)))

    def clear(self) -> None:
        with self._lock:
            self._hits.clear()


local_windows = _LocalWindows()


def rate_limit_hit(key: str, rate: Rate) -> Decision:
    """Count one request of `key` against `rate`, atomically; raises redis.RedisError when
    the Redis of API_RATE_LIMIT_REDIS_URL cannot answer."""
    url = settings.API_RATE_LIMIT_REDIS_URL
    if url:
        return _redis_hit(url, settings.API_RATE_LIMIT_KEY_PREFIX + key, rate)
    return local_windows.hit(key, rate)


class RateLimitUnavailable(exceptions.APIException):
    status_code = 503
    default_detail = _("Rate limits cannot be checked just now, so token requests are "
                       "refused; retry later.")
    default_code = "service_unavailable"

    def __init__(self) -> None:
        super().__init__()
        self.wait = UNAVAILABLE_RETRY_SECONDS  # the error handler's Retry-After


def caller_key(request: Request) -> str:
    if isinstance(request.auth, ApiToken):
        return f"token:{request.auth.prefix}"
    if request.user is not None and request.user.is_authenticated:
        return f"user:{request.user.pk}"
    return f"address:{request.META.get('REMOTE_ADDR', '')}"


class ApiRateThrottle(BaseThrottle):
    """DEFAULT_THROTTLE_CLASSES' one entry: every API view is limited (see the module)."""

    decision: Decision | None = None

    def allow_request(self, request: Request, view: APIView) -> bool:
        known = rates()
        name = throttle_class_of(view, request.method, known)
        key = f"{name}:{caller_key(request)}"
        try:
            self.decision = rate_limit_hit(key, known[name])
        except redis.RedisError:
            if isinstance(request.auth, ApiToken):
                logger.exception("Rate limits unavailable (Redis): refusing %s %s of token %s",
                                 request.method, request.path, request.auth.prefix)
                raise RateLimitUnavailable() from None
            logger.exception("Rate limits unavailable (Redis): letting %s %s through",
                             request.method, request.path)
            return True
        setattr(request._request, STATE_ATTRIBUTE, self.decision)
        return self.decision.allowed

    def wait(self) -> float | None:
        return self.decision.retry_after if self.decision else None
