"""Configuration: production refuses to start without its secrets; check --deploy passes."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from registry import env

ROOT = Path(__file__).resolve().parents[2]

PRODUCTION = {
    "DEBUG": "false",
    "SECRET_KEY": "p" * 20 + "roduction-like-secret-key-with-enough-entropy-9f8e7d6c5b4a",
    "REGISTRY_PEPPER": "production-like-pepper-0123456789",
    "ALLOWED_HOSTS": "registry.example.org",
    "DATABASE_URL": "postgres://registry@127.0.0.1:5432/registry",
}


def _manage(*args, **environ):
    base = {k: v for k, v in os.environ.items()
            if k not in {"SECRET_KEY", "REGISTRY_PEPPER", "DEBUG", "SECURE_SSL_REDIRECT",
                         "DATABASE_URL", "ALLOWED_HOSTS"}}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT,
                          env={**base, **environ}, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("missing", ["SECRET_KEY", "REGISTRY_PEPPER"])
def test_production_without_a_secret_refuses_to_start(missing):
    environ = {k: v for k, v in PRODUCTION.items() if k != missing}
    result = _manage("check", **environ)
    assert result.returncode != 0
    assert f"{missing} is not set" in result.stderr


def test_production_with_a_short_secret_refuses_to_start():
    result = _manage("check", **{**PRODUCTION, "SECRET_KEY": "short"})
    assert result.returncode != 0 and "at least 50" in result.stderr


def test_check_deploy_passes_with_production_like_variables():
    result = _manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr


def test_debug_runs_without_secrets():
    result = _manage("check", DEBUG="true")
    assert result.returncode == 0, result.stderr


def test_typed_helpers(monkeypatch):
    monkeypatch.setenv("X_BOOL", "maybe")
    with pytest.raises(ImproperlyConfigured, match="X_BOOL"):
        env.env_bool("X_BOOL")
    monkeypatch.setenv("X_INT", "12a")
    with pytest.raises(ImproperlyConfigured, match="X_INT"):
        env.env_int("X_INT", 1)
    monkeypatch.setenv("X_LIST", "a, b,,c ")
    assert env.env_list("X_LIST") == ["a", "b", "c"]
    monkeypatch.setenv("X_BOOL", "Yes")
    assert env.env_bool("X_BOOL") is True


def test_login_and_session_limits_come_from_the_environment():
    script = ("from django.conf import settings as s; "
              "print(s.SESSION_COOKIE_AGE, s.SESSION_SAVE_EVERY_REQUEST, s.SESSION_MAX_HOURS, "
              "s.AXES_FAILURE_LIMIT, int(s.AXES_COOLOFF_TIME.total_seconds()))")
    defaults = _manage("shell", "--no-imports", "-c", script, **PRODUCTION)
    assert defaults.returncode == 0, defaults.stderr
    assert defaults.stdout.split() == ["1800", "True", "12", "5", "900"]
    custom = _manage("shell", "--no-imports", "-c", script, **PRODUCTION, SESSION_IDLE_MINUTES="10",
                     SESSION_MAX_HOURS="8", LOGIN_FAILURE_LIMIT="3", LOGIN_COOLOFF_MINUTES="60")
    assert custom.stdout.split() == ["600", "True", "8", "3", "3600"]
    bad = _manage("check", **PRODUCTION, SESSION_IDLE_MINUTES="half an hour")
    assert bad.returncode != 0 and "SESSION_IDLE_MINUTES must be an integer" in bad.stderr


def test_production_sends_a_content_security_policy_without_inline_script():
    script = ("from django.test import Client; "
              "r = Client().get('/accounts/login/', secure=True, "
              "HTTP_HOST='registry.example.org'); "
              "print(r.status_code); print(r.headers['Content-Security-Policy'])")
    result = _manage("shell", "--no-imports", "-c", script, **PRODUCTION)
    assert result.returncode == 0, result.stderr
    status, policy = result.stdout.strip().splitlines()[-2:]
    assert status == "200"
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy
