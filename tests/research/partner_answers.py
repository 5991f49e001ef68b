"""Raw answers of partner queries built directly from sets of patient ids (no cohort in the
database): what a query over a population would compute, for the disclosure-control tests."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from research.partner.answer import DIGEST_SUFFIX, RawAnswer, set_digest

SNAPSHOT_AT = "2026-11-30T00:00:00+00:00"


def answer_over(population: Iterable[int], *, attribute: Iterable[int] = (),
                group: str = "all", sensitivity: int = 1) -> RawAnswer:
    """One cell: the patients of `population`, and those of them with `attribute`."""
    ids = np.array(sorted(set(population)), dtype=np.int64)
    has = np.isin(ids, np.array(sorted(set(attribute)), dtype=np.int64))
    table = pd.DataFrame({
        "group": [group],
        "patients": [len(ids)],
        f"patients{DIGEST_SUFFIX}": np.array([set_digest(ids)], dtype=np.uint64),
        "with_attribute": [int(has.sum())],
        f"with_attribute{DIGEST_SUFFIX}": np.array([set_digest(ids[has])], dtype=np.uint64),
    })
    return RawAnswer(population=ids, tables={"cohort": table},
                     rates={"cohort": {"share": ("with_attribute", "patients")}},
                     sensitivity=sensitivity, snapshot_at=SNAPSHOT_AT)
