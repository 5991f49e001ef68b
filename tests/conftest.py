"""Fixed personas and the rules for PostgreSQL- and Redis-only tests.

Site A and site B; alice is the clerk of A, bob the clerk of B, mona monitors A, and the
registry-wide roles: carol (committee), ivan (investigator), pat (partner), ada (admin).
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from urllib.parse import urlparse

import pytest
from celery.contrib.testing.worker import start_worker
from celery.signals import task_postrun
from django.db import connection

from registry.celery import app
from registry.models import Concept, Role
from registry.services.organisation import site_upsert, user_add
from registry.services.terminology import starter_vocabulary_load


def pytest_configure(config):
    # Password hashing is deliberately slow; tests log in often and test no hashing strength.
    from django.conf import settings

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


ON_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _unavailable(reason: str) -> None:
    if ON_CI:
        pytest.fail(f"{reason}: on CI this test must run, not be skipped.")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _service_markers(request):
    if request.node.get_closest_marker("postgres") and connection.vendor != "postgresql":
        _unavailable("needs PostgreSQL (set DATABASE_URL)")
    if request.node.get_closest_marker("browser") and not (
        shutil.which("chromium") or shutil.which("chromium-browser")
    ):
        _unavailable("needs Chromium (apt-get install chromium)")
    if request.node.get_closest_marker("redis"):
        url = urlparse(os.environ.get("REDIS_URL") or os.environ.get("CELERY_BROKER_URL") or "")
        try:
            socket.create_connection((url.hostname or "", url.port or 6379), timeout=1).close()
        except (OSError, ValueError):
            _unavailable("needs Redis (set REDIS_URL)")


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """The starter vocabulary is loaded once into the test database; tests roll back to it."""
    with django_db_blocker.unblock():
        starter_vocabulary_load(acting_user=None)


@pytest.fixture
def vocabulary(db):
    """The starter vocabulary (reloaded after a transactional test flushed it)."""
    if not Concept.objects.exists():
        starter_vocabulary_load(acting_user=None)


@pytest.fixture
def site_a(db):
    return site_upsert(code="SITE-A", name="Site A Hospital", province="Zhejiang",
                       acting_user=None)[0]


@pytest.fixture
def site_b(db):
    return site_upsert(code="SITE-B", name="Site B Hospital", province="Sichuan",
                       acting_user=None)[0]


def persona_password(username: str) -> str:
    """A persona's password: long and unlike the username, so the password validators pass."""
    return f"pw-{username}-persona"


def totp_token(device) -> str:
    """The next code of a TOTP device that it has not accepted yet (as its app would show).

    Two logins within one 30-second step would otherwise need the same code, which the device
    refuses as reused: the code of the following step is within its tolerance.
    """
    from django_otp.oath import TOTP

    device.refresh_from_db()
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    totp.time = max(time.time(), (device.last_t + 1 - device.drift) * device.step + device.t0)
    return f"{totp.token():0{device.digits}d}"


def _person(username, role, sites=()):
    return user_add(username=username, role=role, site_codes=[s.code for s in sites],
                    password=persona_password(username), acting_user=None)[0]


@pytest.fixture
def alice(site_a):
    """Clerk of site A."""
    return _person("alice", Role.CLERK, [site_a])


@pytest.fixture
def bob(site_b):
    """Clerk of site B."""
    return _person("bob", Role.CLERK, [site_b])


@pytest.fixture
def mona(site_a):
    """Monitor of site A."""
    return _person("mona", Role.MONITOR, [site_a])


@pytest.fixture
def carol(db):
    """Committee member."""
    return _person("carol", Role.COMMITTEE)


@pytest.fixture
def ivan(db):
    """Investigator."""
    return _person("ivan", Role.INVESTIGATOR)


@pytest.fixture
def pat(db):
    """Partner."""
    return _person("pat", Role.PARTNER)


@pytest.fixture
def ada(db):
    """Registry admin."""
    return _person("ada", Role.ADMIN)


def _close_worker_connection(**kwargs):
    connection.close()  # runs in the worker's thread: its own connection, not the test's


@pytest.fixture
def redis_worker(settings):
    """A real Celery worker (in a thread of this process) consuming from Redis."""
    app.conf.task_always_eager = False
    task_postrun.connect(_close_worker_connection)
    try:
        with start_worker(app, pool="solo", perform_ping_check=False, loglevel="WARNING"):
            yield app
    finally:
        task_postrun.disconnect(_close_worker_connection)
        app.conf.task_always_eager = settings.CELERY_TASK_ALWAYS_EAGER
