"""History tables carry the indexes their readers use and no other: every audited write pays
for each index of its history table."""

import pytest
from django.db import connection

from registry.dbroles import history_tables

# A record's versions by id, the as-of reader's history_date, the history's user (indexed by
# django-simple-history itself), the primary key.
EVERY_HISTORY = {("history_id",), ("id",), ("history_date",), ("history_user_id",)}
# A many-to-many field's history (a data request's sites and team): its rows are read with
# their request's history row.
M2M_HISTORY = {("m2m_history_id",), ("id",), ("history_id",)}
M2M_TABLES = {"research_historicaldatarequest_sites", "research_historicaldatarequest_team"}
# Tables of rows holding site words: the term-frequency refresh finds an import's rows there.
WORD_TABLES = {"registry_historicaldiagnosis", "registry_historicaltreatmentline",
               "registry_historicaldrugadministration", "registry_historicaladverseevent",
               "registry_historicallabresult"}


@pytest.mark.postgres
@pytest.mark.django_db
def test_history_tables_index_only_what_their_readers_use():
    tables = sorted(history_tables())
    assert set(tables) > WORD_TABLES
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT t.relname, array_agg(a.attname ORDER BY k.n) FROM pg_index x "
            "JOIN pg_class t ON t.oid = x.indrelid "
            "CROSS JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS k(attnum, n) "
            "JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum "
            "WHERE t.relname = ANY(%s) GROUP BY t.relname, x.indexrelid", [tables])
        indexed: dict[str, set] = {}
        for table, columns in cursor.fetchall():
            indexed.setdefault(table, set()).add(tuple(columns))
    for table in tables:
        if table in M2M_TABLES:
            assert indexed[table] == M2M_HISTORY, table
            continue
        expected = EVERY_HISTORY | ({("import_batch_id",)} if table in WORD_TABLES else set())
        assert indexed[table] == expected, table
