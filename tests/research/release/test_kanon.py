"""k-anonymity: the hierarchies level by level, and k_anonymise's promises as properties over
generated patient tables (checked with plain pandas group counts)."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from research.release import deid, kanon
from tests.research.release import PROPERTY

SITES = [f"H{i}" for i in range(1, 9)]
PROVINCE = {site: f"P{int(site[1:]) % 3}" for site in SITES}
REGION = {"P0": "North", "P1": "North", "P2": "South"}


def hierarchies() -> dict[str, kanon.Hierarchy]:
    return {
        "age": kanon.age_hierarchy(),
        "sex": kanon.suppress_only(name="sex"),
        "site": kanon.category_hierarchy(PROVINCE, REGION, name="site"),
        "year": kanon.year_hierarchy(),
    }


@st.composite
def patient_tables(draw, max_rows: int = 250):
    rows = draw(st.integers(min_value=0, max_value=max_rows))
    ages = draw(st.lists(st.one_of(st.none(), st.integers(0, 105)), min_size=rows,
                         max_size=rows))
    frame = pd.DataFrame({
        "patient": [f"S{i:04d}" for i in range(rows)],
        "age": deid.age_top_coded(pd.Series(ages, dtype="Int64")),
        "sex": draw(st.lists(st.sampled_from(["M", "F", None]), min_size=rows, max_size=rows)),
        "value": draw(st.lists(st.floats(allow_nan=True, allow_infinity=False), min_size=rows,
                               max_size=rows)),
        "site": draw(st.lists(st.sampled_from(SITES), min_size=rows, max_size=rows)),
        "year": draw(st.lists(st.integers(1995, 2025), min_size=rows, max_size=rows)),
    })
    # An index that is neither 0..n-1 nor sorted, to see that it is kept.
    frame.index = pd.Index(draw(st.permutations(range(0, 3 * rows, 3))), name="row")
    return frame


def expected_at(frame: pd.DataFrame, quasi: dict, levels: dict) -> pd.DataFrame:
    return pd.DataFrame({name: kanon.generalise(frame[name], quasi[name], levels[name])
                         for name in quasi}, index=frame.index)


def small_group_records(generalised: pd.DataFrame, k: int) -> int:
    sizes = generalised.groupby(list(generalised.columns), dropna=False).size()
    return int(sizes[sizes < k].sum())


def same(a: pd.Series, b: pd.Series) -> np.ndarray:
    """Equal values, a missing value equal to a missing value."""
    return ((a == b).fillna(False) | (a.isna() & b.isna())).to_numpy()


@PROPERTY
@given(frame=patient_tables(), k=st.integers(2, 12),
       max_suppressed=st.sampled_from([0.0, 0.02, 0.05, 0.2, 1.0]),
       names=st.sampled_from([("age", "sex", "site", "year"), ("age", "sex"), ("site",),
                              ("year", "age")]))
def test_k_anonymise_keeps_its_promises(frame, k, max_suppressed, names):
    quasi = {name: hierarchies()[name] for name in names}
    out, report = kanon.k_anonymise(frame, quasi, k=k, max_suppressed=max_suppressed)
    qi = list(quasi)

    # Same rows in the same order, same columns; what is not a quasi-identifier is untouched.
    assert out.index.equals(frame.index)
    assert list(out.columns) == list(frame.columns)
    for column in frame.columns.difference(qi):
        pd.testing.assert_series_equal(out[column], frame[column])

    assert report.rows == len(frame)
    assert report.k == k
    assert report.quasi_identifiers == qi
    json.dumps(report.to_dict())
    if len(frame) == 0:
        assert out.empty
        return

    levels = {name: report.levels[name]["level"] for name in qi}
    for name in qi:
        assert 0 <= levels[name] <= quasi[name].top
        assert report.levels[name]["label"] == quasi[name].label(levels[name])

    # Each row is either its input generalised at the chosen levels, or fully suppressed.
    expected = expected_at(frame, quasi, levels)
    kept = np.logical_and.reduce([same(out[n], expected[n]) for n in qi])
    starred = np.logical_and.reduce([(out[n] == kanon.SUPPRESSED).fillna(False).to_numpy()
                                     for n in qi])
    assert (kept | starred).all()
    suppressed = ~kept
    if report.all_suppressed:
        assert len(frame) < k
        assert starred.all()
        assert report.suppressed_records == len(frame)
        assert report.groups == 0 and report.achieved_k == 0
        return
    assert report.suppressed_records == suppressed.sum()
    assert report.suppressed_records <= max_suppressed * len(frame) + 1e-9

    # Every combination left is shared by at least k rows.
    left = out.loc[~suppressed, qi]
    sizes = left.groupby(qi, dropna=False).size()
    assert (sizes >= k).all()
    assert report.groups == len(sizes)
    assert report.smallest_group == (sizes.min() if len(sizes) else None)
    assert report.achieved_k == (sizes.min() if len(sizes) else 0)

    # Rows changed: any quasi-identifier differs from its value as recorded.
    recorded = expected_at(frame, quasi, dict.fromkeys(qi, 0))
    unchanged = np.logical_and.reduce([same(out[n], recorded[n]) for n in qi])
    assert report.generalised_records == (~unchanged).sum()

    # The least generalisation: one level lower on any quasi-identifier breaks the limit.
    allowed = int(np.floor(max_suppressed * len(frame) + 1e-9))
    for name in qi:
        if levels[name] > 0:
            lower = expected_at(frame, quasi, {**levels, name: levels[name] - 1})
            assert small_group_records(lower, k) > allowed


@settings(PROPERTY, max_examples=25)
@given(frame=patient_tables(max_rows=120), k=st.integers(2, 6), seed=st.integers(0, 10**6))
def test_the_choice_does_not_depend_on_row_order(frame, k, seed):
    quasi = hierarchies()
    out, report = kanon.k_anonymise(frame, quasi, k=k)
    shuffled = frame.sample(frac=1, random_state=seed)
    out2, report2 = kanon.k_anonymise(shuffled, quasi, k=k)
    assert report2.to_dict() == report.to_dict()
    pd.testing.assert_frame_equal(out2.loc[out.index], out)


@PROPERTY
@given(ages=st.lists(st.one_of(st.none(), st.integers(0, 120)), max_size=40),
       top=st.integers(60, 100))
def test_age_levels_only_coarsen(ages, top):
    texts = deid.age_top_coded(pd.Series(ages, dtype="Int64"), top=top)
    hierarchy = kanon.age_hierarchy(top=top)
    levels = [kanon.generalise(texts, hierarchy, level) for level in range(4)]
    for age, exact, five, ten, star in zip(ages, *levels, strict=True):
        assert star == "*"
        if age is None:
            assert exact is pd.NA and five is pd.NA and ten is pd.NA
        elif age >= top:
            assert exact == five == ten == f"{top}+"
        else:
            assert exact == str(age)
            for band, width in ((five, 5), (ten, 10)):
                low, high = (int(x) for x in band.split("-"))
                assert low <= age <= high
                assert low % width == 0
                assert high == min(low + width - 1, top - 1)


def test_hierarchy_levels_by_example():
    ages = pd.Series(["57", "90+", "89", "0", None], dtype="string")
    age = kanon.age_hierarchy()
    assert kanon.generalise(ages, age, 1).tolist()[:4] == ["55-59", "90+", "85-89", "0-4"]
    assert kanon.generalise(ages, age, 2).tolist()[:4] == ["50-59", "90+", "80-89", "0-9"]
    assert kanon.generalise(ages, age, 3).tolist() == ["*"] * 5

    years = pd.Series([2017, 2015, 2020, None], dtype="Int64")
    year = kanon.year_hierarchy()
    assert kanon.generalise(years, year, 0).tolist()[:3] == ["2017", "2015", "2020"]
    assert kanon.generalise(years, year, 1).tolist()[:3] == ["2015-2019", "2015-2019",
                                                            "2020-2024"]
    assert kanon.generalise(pd.Series([dt.date(2012, 5, 1)]), year, 1).tolist() == [
        "2010-2014"]

    sites = pd.Series(["H1", "H3", "H5"])
    site = kanon.category_hierarchy(PROVINCE, REGION, name="site")
    assert [kanon.generalise(sites, site, level).tolist() for level in range(4)] == [
        ["H1", "H3", "H5"], ["P1", "P0", "P2"], ["North", "North", "South"], ["*"] * 3]
    assert site.label(1) == "grouping 1"
    assert kanon.generalise(pd.Series(["M", "F"]), kanon.suppress_only(), 1).tolist() == [
        "*", "*"]


def test_a_small_table_is_banded_just_enough():
    # Ten patients of one sex and site, ages 50..59: exact ages are unique, 5-year bands
    # hold five each, which is k.
    frame = pd.DataFrame({"age": [str(a) for a in range(50, 60)], "sex": ["F"] * 10})
    quasi = {"age": kanon.age_hierarchy(), "sex": kanon.suppress_only(name="sex")}
    out, report = kanon.k_anonymise(frame, quasi, k=5, max_suppressed=0)
    assert out["age"].tolist() == ["50-54"] * 5 + ["55-59"] * 5
    assert out["sex"].tolist() == ["F"] * 10
    assert report.levels["age"]["level"] == 1
    assert report.levels["age"]["label"] == "5-year band"
    assert report.levels["sex"]["level"] == 0
    assert (report.groups, report.smallest_group, report.achieved_k) == (2, 5, 5)
    assert (report.generalised_records, report.suppressed_records) == (10, 0)


def test_rare_records_are_suppressed_when_the_limit_allows():
    frame = pd.DataFrame({"age": ["50"] * 20 + ["99"], "sex": ["F"] * 21})
    quasi = {"age": kanon.age_hierarchy(top=90), "sex": kanon.suppress_only()}
    out, report = kanon.k_anonymise(frame, quasi, k=5, max_suppressed=0.05)
    assert out["age"].tolist() == ["50"] * 20 + ["*"]
    assert out["sex"].tolist() == ["F"] * 20 + ["*"]
    assert report.suppressed_records == 1
    assert report.generalised_records == 1
    assert report.levels == {
        "age": {"level": 0, "label": "age in years", "top": 3, "loss": 0.0},
        "sex": {"level": 0, "label": "as recorded", "top": 1, "loss": 0.0}}


def test_fewer_rows_than_k_are_all_suppressed():
    frame = pd.DataFrame({"age": ["40", "41"], "other": [1, 2]})
    out, report = kanon.k_anonymise(frame, {"age": kanon.age_hierarchy()}, k=3)
    assert out["age"].tolist() == ["*", "*"]
    assert out["other"].tolist() == [1, 2]
    assert report.all_suppressed
    assert report.suppressed_records == 2
    assert report.notes


def test_an_empty_table_and_no_quasi_identifiers():
    empty = pd.DataFrame({"age": pd.Series([], dtype="string"), "x": []})
    out, report = kanon.k_anonymise(empty, {"age": kanon.age_hierarchy()})
    assert out.empty and list(out.columns) == ["age", "x"]
    assert report.rows == 0 and report.suppressed_records == 0

    frame = pd.DataFrame({"age": ["40", "41"], "x": [1.5, 2.5]})
    out, report = kanon.k_anonymise(frame, {})
    pd.testing.assert_frame_equal(out, frame)
    assert report.quasi_identifiers == [] and report.notes == [
        "No quasi-identifiers: the table is unchanged."]


def test_many_wide_quasi_identifiers_combine_beyond_sixty_four_bits():
    # Five quasi-identifiers of 5,000 distinct values each: 5000^5 combinations do not fit
    # one 64-bit key, so the keys are compacted on the way (and must still count right).
    rng = np.random.default_rng(7)
    rows = 5_000
    frame = pd.DataFrame({f"q{i}": rng.permutation(rows).astype(str) for i in range(5)})
    frame["q0"] = frame["q0"].where(np.arange(rows) % 2 == 0, "common")
    quasi = {name: kanon.suppress_only(name=name) for name in frame.columns}
    out, report = kanon.k_anonymise(frame, quasi, k=2, max_suppressed=1.0)
    sizes = out[~(out == "*").all(axis=1)].groupby(list(frame.columns)).size()
    assert (sizes >= 2).all()
    assert report.groups == len(sizes)


def test_k_anonymise_refuses_bad_arguments():
    frame = pd.DataFrame({"age": ["40"] * 10})
    quasi = {"age": kanon.age_hierarchy()}
    for k in (1, 0, -3, 1001, 2.5, True, None):
        with pytest.raises(ValueError, match="k must be"):
            kanon.k_anonymise(frame, quasi, k=k)
    for share in (-0.1, 1.5, float("nan"), float("inf"), "0.05"):
        with pytest.raises(ValueError, match="max_suppressed"):
            kanon.k_anonymise(frame, quasi, max_suppressed=share)
    with pytest.raises(ValueError, match="no column 'sex'"):
        kanon.k_anonymise(frame, {"sex": kanon.suppress_only()})
    with pytest.raises(TypeError, match="needs a Hierarchy"):
        kanon.k_anonymise(frame, {"age": "age"})


def test_bad_hierarchies_and_values_are_refused():
    frame = pd.DataFrame({"site": ["H1", "H2", "H9"] * 4})
    with pytest.raises(ValueError, match="no group for the value 'H9'"):
        kanon.k_anonymise(frame, {"site": kanon.category_hierarchy(PROVINCE)})

    def suppressed(values):
        return pd.Series("*", index=values.index)

    # Level 1 joins a and b, level 2 parts them again: not a generalisation.
    splitting = kanon.Hierarchy("bad", (lambda s: s, lambda s: s.map({"a": "X", "b": "X"}),
                                        lambda s: s.map({"a": "Y", "b": "Z"}), suppressed))
    with pytest.raises(ValueError, match="splits 'X'"):
        kanon.k_anonymise(pd.DataFrame({"x": ["a", "b", "a"]}), {"x": splitting}, k=2)
    not_starred = kanon.Hierarchy("bad", (lambda s: s, lambda s: s.str.upper()))
    with pytest.raises(ValueError, match="not all"):
        kanon.k_anonymise(pd.DataFrame({"x": ["a", "b"]}), {"x": not_starred}, k=2)
    with pytest.raises(ValueError, match="at least two levels"):
        kanon.Hierarchy("one", (lambda s: s,))
    with pytest.raises(ValueError, match="negative"):
        kanon.generalise(pd.Series(["-4"]), kanon.age_hierarchy(), 1)
    with pytest.raises(ValueError, match="Not an age"):
        kanon.generalise(pd.Series(["sixty"]), kanon.age_hierarchy(), 1)
