"""Rate limits of the API (registry/api/throttling.py): exact under concurrency in Redis and in
memory, per token, per class, windows that move on, the headers and the error body, and what
happens while Redis is down.

pat is a partner (tests/conftest.py); his tokens' prefixes are random, so counters of earlier
runs never meet these.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
import redis
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.test import Client

from registry.api.scopes import Scope
from registry.api.throttling import (
    DEFAULT_CLASS,
    UNAVAILABLE_RETRY_SECONDS,
    Rate,
    local_windows,
    rates,
    throttle_class_of,
)
from registry.services.api_tokens import api_token_create

ME = "/api/v1/me/"
pytestmark = [pytest.mark.postgres]


def _limits(settings, default: str, **others: str) -> None:
    settings.API_RATE_LIMITS = {"default": default, "scoring": "600/min",
                                "aggregates": "60/min", "feasibility": "60/min", **others}


@pytest.fixture
def redis_limits(settings):
    """Counters in the Redis of REDIS_URL (this worktree's db); cleared before and after."""
    url = settings.API_RATE_LIMIT_REDIS_URL
    if not url:
        pytest.skip("needs Redis (set REDIS_URL)")
    client = redis.Redis.from_url(url)

    def clear() -> None:
        for key in client.scan_iter(f"{settings.API_RATE_LIMIT_KEY_PREFIX}*"):
            client.delete(key)

    try:
        clear()
    except redis.RedisError:
        pytest.skip("needs Redis (set REDIS_URL)")
    yield client
    clear()


@pytest.fixture
def memory_limits(settings):
    settings.API_RATE_LIMIT_REDIS_URL = None
    local_windows.clear()
    yield
    local_windows.clear()


def _token(user, scopes=("releases",)) -> str:
    return api_token_create(user=user, name="rate limits", scopes=list(scopes),
                            expires_days=30, acting_user=None)[1]


def _get(text: str, path: str = ME):
    return Client().get(path, HTTP_AUTHORIZATION=f"Bearer {text}")


def _burst(text: str, n: int) -> list:
    """n requests at once, each from its own thread (and database connection)."""
    start = threading.Barrier(n)
    responses: list = [None] * n

    def one(i: int) -> None:
        try:
            start.wait()
            responses[i] = _get(text)
        finally:
            connection.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return responses


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_requests_cannot_pass_a_limit_of_ten_in_redis(settings, pat,
                                                                       redis_limits):
    _limits(settings, "10/min")
    text = _token(pat)
    responses = _burst(text, 20)
    assert Counter(r.status_code for r in responses) == {200: 10, 429: 10}
    for response in responses:
        assert response["X-RateLimit-Limit"] == "10"
        if response.status_code == 429:
            assert 1 <= int(response["Retry-After"]) <= 60
            assert response["X-RateLimit-Remaining"] == "0"
            assert response.json()["error"]["code"] == "throttled"
    remaining = sorted(int(r["X-RateLimit-Remaining"]) for r in responses
                       if r.status_code == 200)
    assert remaining == list(range(10))  # each admitted request took exactly one place
    # The window is one sorted set of ten admitted requests, expiring with the window.
    (key,) = redis_limits.keys(f"{settings.API_RATE_LIMIT_KEY_PREFIX}*")
    assert redis_limits.zcard(key) == 10
    assert 0 < redis_limits.pttl(key) <= 60_000


@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_requests_cannot_pass_a_limit_of_ten_in_memory(settings, pat,
                                                                        memory_limits):
    _limits(settings, "10/min")
    responses = _burst(_token(pat), 20)
    assert Counter(r.status_code for r in responses) == {200: 10, 429: 10}
    assert all(r["Retry-After"] for r in responses if r.status_code == 429)


@pytest.mark.parametrize("backend", ["redis", "memory"])
@pytest.mark.django_db
def test_the_window_moves_on(settings, pat, backend, request):
    request.getfixturevalue(f"{backend}_limits")
    _limits(settings, "3/1s")
    text = _token(pat)
    assert [_get(text).status_code for _ in range(4)] == [200, 200, 200, 429]
    refused = _get(text)
    assert refused.status_code == 429 and refused["Retry-After"] == "1"
    time.sleep(1.1)
    again = _get(text)
    assert again.status_code == 200
    assert again["X-RateLimit-Remaining"] == "2"


@pytest.mark.parametrize("backend", ["redis", "memory"])
@pytest.mark.django_db
def test_each_token_and_each_user_has_its_own_counter(settings, pat, ivan, backend, request):
    request.getfixturevalue(f"{backend}_limits")
    _limits(settings, "2/min")
    first, second, ivans = _token(pat), _token(pat), _token(ivan)
    assert [_get(first).status_code for _ in range(3)] == [200, 200, 429]
    assert _get(second).status_code == 200  # the same person's other token
    assert _get(ivans).status_code == 200
    # A login session counts against its user, apart from the user's tokens.
    session = Client()
    session.force_login(pat)
    assert [session.get(ME).status_code for _ in range(3)] == [200, 200, 429]
    assert _get(second).status_code == 200


@pytest.mark.django_db
def test_headers_on_every_counted_response_and_none_on_refused_credentials(settings, pat,
                                                                          memory_limits):
    _limits(settings, "5/min")
    text = _token(pat)
    ok = _get(text)
    assert (ok.status_code, ok["X-RateLimit-Limit"], ok["X-RateLimit-Remaining"]) == (
        200, "5", "4")
    not_found = _get(text, "/api/v1/releases/999999/")
    assert not_found.status_code == 404
    assert not_found["X-RateLimit-Remaining"] == "3"
    # Refused before counting: no valid token, or not the scope.
    assert "X-RateLimit-Limit" not in Client().get(ME)
    refused = _get(text, "/api/v1/requests/")
    assert refused.status_code == 403 and "X-RateLimit-Limit" not in refused
    assert _get(text)["X-RateLimit-Remaining"] == "2"


@pytest.mark.django_db
def test_a_token_is_refused_with_503_while_redis_is_down_and_a_session_passes(settings, pat,
                                                                               caplog):
    _limits(settings, "5/min")
    settings.API_RATE_LIMIT_REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    response = _get(_token(pat))
    assert response.status_code == 503
    assert response["Retry-After"] == str(UNAVAILABLE_RETRY_SECONDS)
    assert response.json()["error"]["code"] == "service_unavailable"
    assert "Rate limits unavailable" in caplog.text
    session = Client()
    session.force_login(pat)
    assert session.get(ME).status_code == 200


class _View:
    def __init__(self, required_scope=None, throttle_scope=None):
        self.required_scope = required_scope
        self.throttle_scope = throttle_scope


@pytest.mark.parametrize(("view", "method", "expected"), [
    (_View(Scope.SCORING), "POST", "scoring"),
    (_View(Scope.AGGREGATES), "GET", "aggregates"),
    (_View(Scope.FEASIBILITY), "POST", "feasibility"),
    (_View(Scope.RELEASES), "GET", DEFAULT_CLASS),
    (_View({"GET": Scope.AGGREGATES, "POST": Scope.FEASIBILITY}), "POST", "feasibility"),
    (_View({"GET": Scope.AGGREGATES}), "HEAD", "aggregates"),
    (_View((Scope.REQUESTS, Scope.RELEASES)), "GET", DEFAULT_CLASS),
    (_View(), "GET", DEFAULT_CLASS),
    (_View(Scope.RELEASES, throttle_scope="scoring"), "GET", "scoring"),
    (_View(Scope.SCORING, throttle_scope="no such class"), "GET", DEFAULT_CLASS),
])
def test_the_class_of_an_endpoint_is_its_scope_s_when_configured(settings, view, method,
                                                                 expected):
    _limits(settings, "120/min")
    assert throttle_class_of(view, method, rates()) == expected


@pytest.mark.parametrize(("text", "limit", "window"), [
    ("120/min", 120, 60), ("10/30s", 10, 30), ("5000/day", 5000, 86400), (" 7 / 2 h ", 7, 7200),
])
def test_rates_are_parsed(text, limit, window):
    assert Rate.parse(text) == Rate(limit=limit, window_seconds=window)


@pytest.mark.parametrize("text", ["", "120", "120/fortnight", "0/min", "10/0s", "-1/min",
                                  "ten/min"])
def test_a_bad_rate_is_refused_loudly(text):
    with pytest.raises(ImproperlyConfigured):
        Rate.parse(text)


def test_a_missing_default_is_refused_loudly(settings):
    settings.API_RATE_LIMITS = {"scoring": "10/min"}
    with pytest.raises(ImproperlyConfigured):
        rates()
