"""What a restored backup is checked against (docs/backup.md).

A fingerprint of a database: the row count of every table, a hash of every history table
(each row in full, ordered by history_id) and where every id sequence stands. Taken of the
source and of the restored copy, the two must be equal: nothing lost, the audit trail
byte-for-byte the same, and new ids continuing where the source's would.
"""

from __future__ import annotations

import psycopg
from django.db import connections
from psycopg import sql
from psycopg.conninfo import make_conninfo

from registry.dbroles import history_tables


def conninfo_for(alias: str = "default", *, dbname: str | None = None) -> str:
    """A libpq connection string for a configured database (or another on the same server)."""
    db = connections[alias].settings_dict
    params = {"dbname": dbname or db["NAME"], "user": db["USER"], "password": db["PASSWORD"],
              "host": db["HOST"], "port": str(db["PORT"] or "")}
    return make_conninfo(**{k: v for k, v in params.items() if v})


def fingerprint(conninfo: str) -> dict[str, dict]:
    """{"rows": {table: count}, "history": {table: md5}, "sequences": {name: last value}}
    of the database's current schema, read in one snapshot."""
    history = history_tables()
    out: dict[str, dict] = {"rows": {}, "history": {}, "sequences": {}}
    with psycopg.connect(conninfo) as conn:
        # One snapshot, and every value rendered the same way on both sides.
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        conn.execute("SET LOCAL TimeZone = 'UTC'")
        conn.execute("SET LOCAL extra_float_digits = 3")
        tables = [row[0] for row in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
            "ORDER BY tablename")]
        for table in tables:
            name = sql.Identifier(table)
            out["rows"][table] = conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(name)).fetchone()[0]
            if table in history:
                out["history"][table] = conn.execute(sql.SQL(
                    "SELECT md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t.history_id), ''))"
                    " FROM {} t").format(name)).fetchone()[0]
        for name, value in conn.execute(
                "SELECT sequencename, last_value FROM pg_sequences "
                "WHERE schemaname = current_schema() ORDER BY sequencename"):
            out["sequences"][name] = value
    return out
