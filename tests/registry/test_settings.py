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
