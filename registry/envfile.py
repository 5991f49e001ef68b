"""The local `.env` of a development checkout: written once by `make demo`, read by manage.py.

`make demo` runs `python -m registry.envfile`, which writes `.env` beside manage.py when there
is none: DEBUG on and keys generated for this checkout. manage.py then reads it (variables
already in the environment win), so every command of the README works as written in a fresh
checkout. An existing `.env` is never rewritten: REGISTRY_PEPPER keys the hash of hospital
patient numbers, and a new one would break duplicate detection of the data already entered.
Deployments set their variables in the environment (docker-compose.yml) and have no `.env`.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

from dotenv import load_dotenv

# REGISTRY_ENV_FILE names another file (a second checkout's, or a test's).
ENV_FILE = Path(os.environ.get("REGISTRY_ENV_FILE")
                or Path(__file__).resolve().parent.parent / ".env")

# What a development checkout needs: DEBUG on (SQLite, eager Celery unless REDIS_URL is set)
# and its own keys, longer than settings' minimums (SECRET_KEY 50, REGISTRY_PEPPER 16).
_HEADER = ("# This checkout's development settings, written by `make demo` "
           "(registry/envfile.py).\n# Never used in production; variables set in the "
           "environment win over these.\n")


def env_file_text() -> str:
    return (_HEADER
            + "DEBUG=true\n"
            + f"SECRET_KEY={secrets.token_urlsafe(48)}\n"
            + f"REGISTRY_PEPPER={secrets.token_urlsafe(24)}\n")


def env_file_write(path: Path = ENV_FILE) -> bool:
    """Write `path` unless it exists; True when written. Readable by its owner only."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write(env_file_text())
    return True


def env_file_load(path: Path = ENV_FILE) -> bool:
    """Set the variables of `path` that the environment does not set; True when it exists."""
    return load_dotenv(path, override=False)


if __name__ == "__main__":
    written = env_file_write()
    sys.stdout.write(f"{'Wrote' if written else 'Kept'} {ENV_FILE}\n")
