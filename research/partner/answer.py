"""The raw result of one partner query, before disclosure control, and the keyed digest of a
set of patients.

A query (an aggregate table or a feasibility count) computes a `RawAnswer` over the analysis
snapshot: its population (every patient the query looked at, after its filters), and its
tables of cells. A table is a DataFrame with one row per cell: the grouping columns, then for
each count column `name` the true count (`name`, int64, distinct patients) and the digest of
the set of patients it counts (`name + DIGEST_SUFFIX`, uint64, `set_digests`). Disclosure
control (research.partner.control) turns it into what leaves: the noise of a count is seeded by
the question and its digest, so the same question gets the same released counts however and
whenever it is asked, and repeats cannot be averaged.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from django.conf import settings

DIGEST_SUFFIX = "__digest"
_KEY_CONTEXT = b"registry partner digests\x00"
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def digest_key() -> np.uint64:
    """A 64-bit key derived from REGISTRY_PEPPER: digests cannot be computed outside."""
    raw = hmac.new(settings.REGISTRY_PEPPER.encode(), _KEY_CONTEXT, hashlib.sha256).digest()
    return np.uint64(int.from_bytes(raw[:8], "little"))


def patient_hashes(patient_ids: np.ndarray, key: np.uint64 | None = None) -> np.ndarray:
    """A keyed 64-bit hash of each patient id (splitmix64 of id XOR key), vectorised."""
    key = digest_key() if key is None else key
    with np.errstate(over="ignore"):
        z = (np.asarray(patient_ids, dtype=np.int64).astype(np.uint64) ^ key)
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def set_digests(group_codes: np.ndarray, patient_ids: np.ndarray, n_groups: int,
                key: np.uint64 | None = None) -> np.ndarray:
    """For each group 0..n_groups-1, the digest of its set of patients: the sum modulo 2**64
    of their keyed hashes. Order does not matter; each (group, patient) pair must appear once
    (deduplicate first). An empty group's digest is 0."""
    out = np.zeros(n_groups, dtype=np.uint64)
    with np.errstate(over="ignore"):
        np.add.at(out, np.asarray(group_codes, dtype=np.int64),
                  patient_hashes(patient_ids, key))
    return out


def set_digest(patient_ids: np.ndarray, key: np.uint64 | None = None) -> np.uint64:
    """The digest of one set of (distinct) patients."""
    ids = np.asarray(patient_ids, dtype=np.int64)
    return set_digests(np.zeros(len(ids), dtype=np.int64), ids, 1, key)[0]


@dataclass
class RawAnswer:
    """What a query computed, before disclosure control.

    - `population`: sorted unique patient ids the query looked at after its filters (the
      overlap audit compares it with the partner's earlier queries, to flag the query);
    - `tables`: name -> DataFrame of cells (grouping columns, count columns and their digest
      columns, see the module's docstring);
    - `rates`: table name -> {rate column: (numerator count column, denominator count column)};
    - `sensitivity`: the most released counts one patient can change, over every table and
      count column (1 for one count column of a grouping that puts each patient in one cell);
      the privacy budget is charged epsilon times this, and the
      partner reads the budget, so it must follow from the question (the parameters), never
      from the data;
    - `snapshot_at`: the time of the analysis snapshot the query read (ISO 8601).
    """

    population: np.ndarray
    tables: dict[str, pd.DataFrame]
    rates: dict[str, dict[str, tuple[str, str]]] = field(default_factory=dict)
    sensitivity: int = 1
    snapshot_at: str = ""
