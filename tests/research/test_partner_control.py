"""Disclosure control of partner answers (research.partner.control): the noise, and property
tests of what leaves. No database: RawAnswers are built directly."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from research.disclosure import MIN_CELL, ROUND_TO
from research.partner.answer import DIGEST_SUFFIX, RawAnswer
from research.partner.control import (
    HIDDEN_TEXT,
    noisy_counts,
    release_tables,
)

KEY = b"test noise key"
DIGEST = f"patients{DIGEST_SUFFIX}"


def digests(n: int, start: int = 1) -> np.ndarray:
    return (np.arange(start, start + n, dtype=np.uint64)
            * np.uint64(0x9E3779B97F4A7C15)) ^ np.uint64(0xD1B54A32D192ED03)


# -- the noise ------------------------------------------------------------------------------------

@pytest.mark.parametrize("epsilon", [0.25, 0.5, 1.0])
def test_the_noise_is_symmetric_with_scale_one_over_epsilon(epsilon):
    n = 6000
    noise = noisy_counts(np.zeros(n, dtype=np.int64), digests(n), epsilon=epsilon, key=KEY)
    # The two-sided geometric distribution: P(k) proportional to exp(-epsilon |k|).
    alpha = math.exp(-epsilon)
    variance = 2 * alpha / (1 - alpha) ** 2
    mean_abs = 2 * alpha / (1 - alpha ** 2)
    assert abs(noise.mean()) < 4 * math.sqrt(variance / n)
    assert noise.var() == pytest.approx(variance, rel=0.12)
    assert np.abs(noise).mean() == pytest.approx(mean_abs, rel=0.08)
    # Symmetric: as many above as below, and the tails alike.
    above, below = int((noise > 0).sum()), int((noise < 0).sum())
    assert abs(above - below) < 4 * math.sqrt(n)
    tail = int(2 / epsilon)
    assert abs(int((noise > tail).sum()) - int((noise < -tail).sum())) < 4 * math.sqrt(n) / 2
    # Roughly 1/epsilon: a larger epsilon is less noisy.
    assert np.abs(noise).mean() < 2.5 / epsilon


def test_the_noise_of_a_count_depends_on_its_set_and_the_key_only():
    counts = np.array([40, 40, 90], dtype=np.int64)
    sets = digests(3)
    first = noisy_counts(counts, sets, epsilon=0.5, key=KEY)
    # The same set gets the same noisy count wherever, whenever and with whatever else asked.
    again = noisy_counts(counts[::-1].copy(), sets[::-1].copy(), epsilon=0.5, key=KEY)
    assert list(again[::-1]) == list(first)
    alone = noisy_counts(counts[1:2], sets[1:2], epsilon=0.5, key=KEY)
    assert alone[0] == first[1]
    # Another key, other noise (over many sets, not all equal).
    many = digests(200)
    zeros = np.zeros(200, dtype=np.int64)
    assert (noisy_counts(zeros, many, epsilon=0.5, key=KEY)
            != noisy_counts(zeros, many, epsilon=0.5, key=b"another key")).sum() > 100


def test_the_noise_refuses_a_bad_epsilon():
    for epsilon in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            noisy_counts(np.array([20]), digests(1), epsilon=epsilon, key=KEY)


# -- what leaves ----------------------------------------------------------------------------------

cells = st.lists(
    st.tuples(st.integers(0, 300), st.integers(0, 300), st.integers(2**32, 2**63)),
    min_size=1, max_size=12, unique_by=lambda c: c[2])


def raw_answer(rows: list[tuple[int, int, int]], order: list[int] | None = None) -> RawAnswer:
    """One table by regimen: patients, and events among them (each with its own set)."""
    order = order if order is not None else list(range(len(rows)))
    frame = pd.DataFrame({
        "regimen": [f"R{rows[i][2] % 97:02d}-{i}" for i in range(len(rows))],
        "patients": [rows[i][0] + rows[i][1] for i in range(len(rows))],
        DIGEST: np.array([rows[i][2] for i in range(len(rows))], dtype=np.uint64),
        "events": [rows[i][1] for i in range(len(rows))],
        f"events{DIGEST_SUFFIX}": np.array([rows[i][2] ^ 0x5555 for i in range(len(rows))],
                                           dtype=np.uint64),
    }).iloc[order].reset_index(drop=True)
    return RawAnswer(population=np.arange(10), tables={"by_regimen": frame},
                     rates={"by_regimen": {"event_rate": ("events", "patients")}},
                     sensitivity=1, snapshot_at="2026-11-30T00:00:00+00:00")


def released(raw: RawAnswer, epsilon: float = 0.5) -> dict:
    return release_tables(raw, epsilon=epsilon, key=KEY)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=cells, epsilon=st.sampled_from([0.1, 0.5, 1.0, 5.0]))
def test_no_count_under_the_minimum_ever_leaves(rows, epsilon):
    raw = raw_answer(rows)
    out = released(raw, epsilon)
    table = out["tables"]["by_regimen"]
    true = raw.tables["by_regimen"].set_index("regimen")
    hidden = 0
    for cell in table["cells"]:
        for column in ("patients", "events"):
            value = cell[column]
            if value is None:
                assert cell[f"{column}_text"] == HIDDEN_TEXT
                continue
            assert value >= MIN_CELL
            assert value % ROUND_TO == 0
            assert cell[f"{column}_text"] == f"{value:,}"
            # A count whose true value is under the minimum is never shown, noise or not.
            assert true.loc[cell["regimen"], column] >= MIN_CELL
        hidden += cell["patients"] is None or cell["events"] is None
    assert table["hidden_cells"] == hidden
    for column in ("patients", "events"):
        shown = [c[column] for c in table["cells"] if c[column] is not None]
        assert table["totals"][column] == sum(shown)
        assert table["hidden_by_column"][column] == len(table["cells"]) - len(shown)
    assert out["disclosure"] == {"min_cell": MIN_CELL, "round_to": ROUND_TO,
                                 "epsilon": epsilon, "method": out["disclosure"]["method"]}


@settings(max_examples=100, deadline=None)
@given(rows=cells)
def test_a_rate_is_never_built_on_a_hidden_count(rows):
    for cell in released(raw_answer(rows))["tables"]["by_regimen"]["cells"]:
        if cell["events"] is None or cell["patients"] is None:
            assert cell["event_rate"] is None
        else:
            assert cell["event_rate"] == round(min(1.0, cell["events"] / cell["patients"]), 4)
            assert 0.0 <= cell["event_rate"] <= 1.0


@settings(max_examples=100, deadline=None)
@given(rows=cells, data=st.data())
def test_the_same_input_gives_byte_identical_output_in_any_row_order(rows, data):
    first = json.dumps(released(raw_answer(rows)), sort_keys=True)
    assert json.dumps(released(raw_answer(rows)), sort_keys=True) == first
    order = data.draw(st.permutations(list(range(len(rows)))))
    assert json.dumps(released(raw_answer(rows, order)), sort_keys=True) == first
    # Cells come sorted by their dimensions.
    names = [c["regimen"] for c in json.loads(first)["tables"]["by_regimen"]["cells"]]
    assert names == sorted(names)


@settings(max_examples=100, deadline=None)
@given(rows=cells)
def test_no_digest_and_no_population_leave(rows):
    raw = raw_answer(rows)
    out = released(raw)
    text = json.dumps(out)
    assert DIGEST_SUFFIX not in text
    for digest in raw.tables["by_regimen"][DIGEST].tolist():
        assert str(digest) not in text
    assert set(out) == {"snapshot_at", "tables", "disclosure"}
    assert all(set(cell) == {"regimen", "patients", "patients_text", "events", "events_text",
                             "event_rate"}
               for cell in out["tables"]["by_regimen"]["cells"])


def test_a_large_count_is_released_near_its_true_value_and_a_small_one_hidden():
    rows = [(5000, 2000, 11), (3, 2, 12), (9, 1, 13)]
    cells_out = released(raw_answer(rows))["tables"]["by_regimen"]["cells"]
    big = next(c for c in cells_out if c["patients"] is not None)
    assert abs(big["patients"] - 7000) <= 40 and abs(big["events"] - 2000) <= 40
    assert sum(c["patients"] is None for c in cells_out) == 2


def test_dimensions_of_every_type_are_json_ready():
    frame = pd.DataFrame({
        "year": np.array([2020, 2021], dtype=np.int64),
        "stage": ["II", None],
        "when": pd.to_datetime(["2021-01-01", None]),
        "share": [0.5, float("nan")],
        "patients": [400, 500],
        DIGEST: np.array([1, 2], dtype=np.uint64),
    })
    out = release_tables(RawAnswer(population=np.arange(3), tables={"t": frame}),
                         epsilon=0.5, key=KEY)
    cells_out = out["tables"]["t"]["cells"]
    assert [(c["year"], c["stage"], c["when"], c["share"]) for c in cells_out] == [
        (2020, "II", "2021-01-01T00:00:00", 0.5), (2021, None, None, None)]
    json.dumps(out, allow_nan=False)


def test_a_rate_naming_a_missing_count_column_is_a_programming_error():
    raw = raw_answer([(50, 20, 7)])
    raw.rates = {"by_regimen": {"rate": ("events", "nobody")}}
    with pytest.raises(ValueError):
        released(raw)
