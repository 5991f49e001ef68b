"""Work that one process at a time may run: PostgreSQL session advisory locks.

A lock is held by the process (its connection) running the work and freed when that process or
its connection dies, so a second worker can tell a live run from one whose worker was killed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from django.db import connection


@contextlib.contextmanager
def process_lock(namespace: int, key: int) -> Iterator[bool]:
    """Whether this process holds the lock (`namespace`, `key`) for the block; it is taken
    without waiting. Elsewhere than PostgreSQL (SQLite, one process) always held."""
    if connection.vendor != "postgresql":
        yield True
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [namespace, key])
        held = cursor.fetchone()[0]
    try:
        yield held
    finally:
        if held and connection.connection is not None:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [namespace, key])
