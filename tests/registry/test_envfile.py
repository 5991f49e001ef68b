"""`make demo` writes a development `.env` once; manage.py reads it, the environment winning."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from dotenv import dotenv_values

from registry.envfile import env_file_load, env_file_write

ROOT = Path(__file__).resolve().parents[2]
_SETTINGS_VARIABLES = ("DEBUG", "SECRET_KEY", "REGISTRY_PEPPER", "DATABASE_URL", "REDIS_URL",
                       "CELERY_BROKER_URL", "ALLOWED_HOSTS")


def test_written_once_with_keys_long_enough_and_private(tmp_path):
    path = tmp_path / ".env"
    assert env_file_write(path) is True
    first = path.read_text()
    values = dotenv_values(path)
    assert values["DEBUG"] == "true"
    assert len(values["SECRET_KEY"]) >= 50 and len(values["REGISTRY_PEPPER"]) >= 16
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Never rewritten: a new pepper would break duplicate detection of entered patients.
    assert env_file_write(path) is False
    assert path.read_text() == first


def test_two_checkouts_get_different_keys(tmp_path):
    env_file_write(tmp_path / "a")
    env_file_write(tmp_path / "b")
    assert dotenv_values(tmp_path / "a")["SECRET_KEY"] != dotenv_values(tmp_path / "b")[
        "SECRET_KEY"]


def test_the_environment_wins_over_the_file(tmp_path, monkeypatch):
    path = tmp_path / ".env"
    path.write_text("REGISTRY_TEST_ENVFILE_A=from-file\nREGISTRY_TEST_ENVFILE_B=from-file\n")
    monkeypatch.setenv("REGISTRY_TEST_ENVFILE_A", "from-environment")
    monkeypatch.delenv("REGISTRY_TEST_ENVFILE_B", raising=False)
    try:
        assert env_file_load(path) is True
        assert os.environ["REGISTRY_TEST_ENVFILE_A"] == "from-environment"
        assert os.environ["REGISTRY_TEST_ENVFILE_B"] == "from-file"
    finally:
        os.environ.pop("REGISTRY_TEST_ENVFILE_B", None)
    assert env_file_load(tmp_path / "absent") is False


def _manage_check(env_file: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in _SETTINGS_VARIABLES}
    env["REGISTRY_ENV_FILE"] = str(env_file)
    return subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_a_readme_command_works_in_a_checkout_after_make_demo(tmp_path):
    missing = _manage_check(tmp_path / "absent")
    assert missing.returncode == 2 and "SECRET_KEY" in missing.stderr
    env_file_write(tmp_path / ".env")
    written = _manage_check(tmp_path / ".env")
    assert written.returncode == 0, written.stderr
    assert "no issues" in written.stdout


def test_every_manage_py_command_the_readme_names_exists():
    import re

    from django.core.management import get_commands

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    named = set(re.findall(r"python manage\.py ([a-z_]+)", readme))
    assert named, "the README names no manage.py command"
    assert named - set(get_commands()) == set()
