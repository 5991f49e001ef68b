"""History tables indexed for the queries that read them, and for nothing else.

django-simple-history indexes every foreign key and every unique or indexed field of each
history table, and every audited write pays for each of those indexes. The history is read in
three ways only:

- one record's versions (record history page, admin history, the workflow's "changed since
  version N", the data-query version check): `WHERE id = ...` -> the index on `id`;
- the bulk reader's snapshot `as_of` (registry/selectors/bulk.py): the latest row per `id`
  with `history_date <= as_of` -> `history_date`, which the library indexes itself
  (SIMPLE_HISTORY_DATE_INDEX), and `id`;
- the term-frequency refresh after an import (registry/services/terminology.py): the history
  rows one import wrote, `WHERE import_batch_id = ...`, on the tables whose columns hold site
  words.

Site scoping of history (registry/access.scope_history) always narrows one record's versions,
found by `id`. `history_user_id` keeps the index the library gives it (not a copied field).
"""

from __future__ import annotations

from collections.abc import Iterable

from simple_history.models import HistoricalRecords

# A record's own history: every reader above looks rows up by the record's id.
HISTORY_INDEXED = ("id",)
# Tables with columns holding site words: the term-frequency refresh reads the history rows
# that one import wrote there.
WORD_HISTORY_INDEXED = ("import_batch",)


class _AllFieldsBut:
    """A `no_db_index` that names every copied field except the kept ones."""

    def __init__(self, kept: Iterable[str]) -> None:
        self.kept = frozenset(kept)

    def __contains__(self, name: object) -> bool:
        return name not in self.kept


def history_records(*, indexed: Iterable[str] = (), **options) -> HistoricalRecords:
    """A model's HistoricalRecords whose table indexes `id` and the copied fields `indexed`
    (foreign keys by field name: "import_batch") and no other copied field."""
    return HistoricalRecords(no_db_index=_AllFieldsBut((*HISTORY_INDEXED, *indexed)),
                             **options)
