"""Disclosure control of a partner query: the only way a number of a `RawAnswer` leaves the
registry (docs/partner-api.md, "Disclosure control and differencing defence").

Every count gets two-sided geometric noise (the discrete Laplace mechanism, from diffprivlib)
whose random state is seeded by the HMAC, under the question's key, of the digest of the set
of patients it counts: the caller (research.services.partner_queries) derives the key from the
question, so a repeated question gets the same numbers (repeats cannot be averaged) and any
other question fresh noise (two answers cannot be compared for identity), each charged. The
noisy count is then rounded to ROUND_TO and hidden when the true count or the rounded count is
under MIN_CELL. Rates are built from the released counts, totals from the released cells. No
true count and no digest is in the output.

Pure: numpy, pandas and diffprivlib; no database, no settings (the caller passes the key).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import importlib
import importlib.util
import math
import sys
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd

from research.disclosure import MIN_CELL, ROUND_TO
from research.partner.answer import DIGEST_SUFFIX, RawAnswer

METHOD = ("two-sided geometric noise seeded by the question and the set of patients counted, "
          "rounding, suppression")
HIDDEN_TEXT = f"< {MIN_CELL}"
TEXT_SUFFIX = "_text"
RATE_DIGITS = 4
TOTALS_NOTE = "totals are of the shown cells"


def _diffprivlib_mechanisms() -> ModuleType:
    """diffprivlib's mechanisms.

    diffprivlib 0.6.6's package __init__ imports its machine-learning models, which import a
    constant scikit-learn 1.9 removed (sklearn.tree._tree.DOUBLE), so `import diffprivlib`
    fails although the mechanisms need nothing of scikit-learn's trees. Then the package is
    registered without running its __init__ and the mechanisms subpackage imported alone.
    """
    try:
        return importlib.import_module("diffprivlib.mechanisms")
    except ImportError:
        if "diffprivlib.mechanisms" in sys.modules:
            return sys.modules["diffprivlib.mechanisms"]
        spec = importlib.util.find_spec("diffprivlib")
        if spec is None:
            raise
        sys.modules.setdefault("diffprivlib", importlib.util.module_from_spec(spec))
        return importlib.import_module("diffprivlib.mechanisms")


def _random_state(key: bytes, digest: int) -> np.random.RandomState:
    """The random state of a count, seeded by HMAC-SHA256 under `key` (the question's) of its
    set's digest (all 256 bits). A RandomState over PCG64, not over its default Mersenne Twister,
    whose seeding costs about 20 times more and would dominate a table of many cells."""
    mac = hmac.new(key, int(digest).to_bytes(8, "little"), hashlib.sha256).digest()
    return np.random.RandomState(np.random.PCG64(int.from_bytes(mac, "little")))


def noisy_counts(counts: np.ndarray, digests: np.ndarray, *, epsilon: float,
                 key: bytes) -> np.ndarray:
    """Each count plus two-sided geometric noise of parameter `epsilon` (sensitivity 1), its
    random state seeded by HMAC-SHA256(key, its digest): under one key (one question) the
    same set gets the same noisy count, under another key independent noise. Each value is
    epsilon-DP with respect to adding or removing one patient of its set."""
    if not (isinstance(epsilon, int | float) and math.isfinite(epsilon) and epsilon > 0):
        raise ValueError("epsilon must be a positive finite number.")
    counts = np.asarray(counts, dtype=np.int64)
    digests = np.asarray(digests, dtype=np.uint64)
    if counts.shape != digests.shape:
        raise ValueError("counts and digests must have the same shape.")
    geometric = _diffprivlib_mechanisms().Geometric
    out = np.empty(counts.shape, dtype=np.int64)
    for index, (count, digest) in enumerate(zip(counts.tolist(), digests.tolist(),
                                                strict=True)):
        mechanism = geometric(epsilon=float(epsilon), sensitivity=1,
                              random_state=_random_state(key, digest))
        out[index] = mechanism.randomise(int(count))
    return out


def rounded(values: np.ndarray) -> np.ndarray:
    """To the nearest multiple of ROUND_TO, halves up (integer arithmetic, no float ties)."""
    values = np.asarray(values, dtype=np.int64)
    return (values + ROUND_TO // 2) // ROUND_TO * ROUND_TO


def count_columns(table: pd.DataFrame) -> list[str]:
    """The count columns of a table: those with a digest column."""
    return [c for c in table.columns
            if not str(c).endswith(DIGEST_SUFFIX) and f"{c}{DIGEST_SUFFIX}" in table.columns]


def dim_columns(table: pd.DataFrame) -> list[str]:
    counts = set(count_columns(table))
    return [c for c in table.columns
            if c not in counts and not str(c).endswith(DIGEST_SUFFIX)]


def _plain(value: Any) -> Any:
    """A dimension's value as JSON has it (numpy scalars, missing values, timestamps)."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, dt.date):
        return value.isoformat()
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


def _sort_key(value: Any) -> tuple:
    """Missing values last, numbers before text, numbers by value."""
    value = _plain(value)
    if value is None:
        return (2, 0, "")
    if isinstance(value, bool | int | float):
        return (0, value, "")
    return (1, 0, str(value))


def _column(table: pd.DataFrame, name: str) -> list[Any]:
    return [_plain(v) for v in table[name].tolist()]


def sorted_cells(table: pd.DataFrame) -> pd.DataFrame:
    """The cells in a stable order: by their dimensions (then by digests, so duplicate
    dimension values still sort the same whatever the input order)."""
    keys = [[_sort_key(v) for v in table[d].tolist()] for d in dim_columns(table)]
    keys += [[int(v) for v in table[c].tolist()]
             for c in sorted(str(c) for c in table.columns if str(c).endswith(DIGEST_SUFFIX))]
    order = sorted(range(len(table)), key=lambda i: tuple(column[i] for column in keys))
    return table.iloc[order].reset_index(drop=True)


def _release_table(table: pd.DataFrame, rates: dict[str, tuple[str, str]], *,
                   epsilon: float, key: bytes) -> dict[str, Any]:
    table = sorted_cells(table)
    dims = dim_columns(table)
    released: dict[str, list[int | None]] = {}
    hidden_by_column: dict[str, int] = {}
    totals: dict[str, int] = {}
    for column in count_columns(table):
        true = table[column].to_numpy(dtype=np.int64)
        shown = rounded(noisy_counts(true, table[f"{column}{DIGEST_SUFFIX}"].to_numpy(),
                                     epsilon=epsilon, key=key))
        hidden = (true < MIN_CELL) | (shown < MIN_CELL)
        released[column] = [None if h else int(v) for v, h in zip(shown, hidden, strict=True)]
        hidden_by_column[column] = int(hidden.sum())
        totals[column] = int(shown[~hidden].sum())
    dim_values = {str(d): _column(table, d) for d in dims}
    cells = []
    any_hidden = 0
    for i in range(len(table)):
        cell: dict[str, Any] = {d: values[i] for d, values in dim_values.items()}
        for column, values in released.items():
            value = values[i]
            cell[column] = value
            cell[f"{column}{TEXT_SUFFIX}"] = HIDDEN_TEXT if value is None else f"{value:,}"
        for rate, (numerator, denominator) in sorted(rates.items()):
            num, den = released[numerator][i], released[denominator][i]
            # A proportion: independent noise may put the numerator above the denominator,
            # and a rate above 1 means nothing (clipping is post-processing: no privacy cost).
            cell[rate] = (None if num is None or den is None or den == 0
                          else round(min(1.0, num / den), RATE_DIGITS))
        any_hidden += any(values[i] is None for values in released.values())
        cells.append(cell)
    return {"cells": cells, "totals": totals, "totals_note": TOTALS_NOTE,
            "hidden_cells": any_hidden, "hidden_by_column": hidden_by_column}


def release_tables(raw: RawAnswer, *, epsilon: float, key: bytes) -> dict[str, Any]:
    """What may leave of `raw`, JSON-ready: per table its cells in a stable order (dimensions,
    each count released or None with its text, each rate from released counts or None), the
    totals of the shown cells and how many cells are hidden; and how it was disclosed."""
    for name, rates in raw.rates.items():
        columns = set(count_columns(raw.tables[name]))
        for rate, pair in rates.items():
            if not set(pair) <= columns:
                raise ValueError(f"Rate {rate!r} of {name!r} needs count columns {pair}.")
    return {
        "snapshot_at": raw.snapshot_at,
        "tables": {name: _release_table(raw.tables[name], raw.rates.get(name, {}),
                                        epsilon=epsilon, key=key)
                   for name in sorted(raw.tables)},
        "disclosure": {"min_cell": MIN_CELL, "round_to": ROUND_TO, "epsilon": float(epsilon),
                       "method": METHOD},
    }


def true_tables(raw: RawAnswer) -> dict[str, Any]:
    """The true counts of `raw` (no digests), in the same order: for the audit log only."""
    out = {}
    for name in sorted(raw.tables):
        table = sorted_cells(raw.tables[name])
        dims, counts = dim_columns(table), count_columns(table)
        columns = {str(d): _column(table, d) for d in dims}
        columns.update({str(c): [int(v) for v in table[c].tolist()] for c in counts})
        out[name] = [{name_: values[i] for name_, values in columns.items()}
                     for i in range(len(table))]
    return {"snapshot_at": raw.snapshot_at, "patients": int(len(raw.population)),
            "sensitivity": int(raw.sensitivity), "tables": out}
