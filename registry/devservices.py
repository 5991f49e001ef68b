"""Find PostgreSQL and Redis for `make test`: the environment's, or the ones on 127.0.0.1.

Prints shell `export` lines. Without either, the suite runs on SQLite with eager Celery and the
PostgreSQL/Redis tests are reported as skipped (on CI they fail instead).
"""

from __future__ import annotations

import os
import shlex
import socket


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def detect() -> dict[str, str]:
    found = {}
    if not os.environ.get("DATABASE_URL") and _reachable("127.0.0.1", 5432):
        found["DATABASE_URL"] = "postgres://postgres@127.0.0.1:5432/registry"
    if not os.environ.get("REDIS_URL") and _reachable("127.0.0.1", 6379):
        found["REDIS_URL"] = "redis://127.0.0.1:6379/15"
    return found


if __name__ == "__main__":
    for name, value in detect().items():
        print(f"export {name}={shlex.quote(value)}")
