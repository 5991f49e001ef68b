"""Pseudonyms, days from the index date and top-coded ages: properties over generated input,
checked against the standard library's HMAC and base32 where it has them."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from research.release import deid
from tests.research.release import PROPERTY, keys

RFC4648_TO_CROCKFORD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567",
                                     "0123456789ABCDEFGHJKMNPQRSTVWXYZ")
KEY = b"0123456789abcdef-release-key"

source_ids = st.one_of(st.integers(min_value=0, max_value=2**63 - 1),
                       st.text(min_size=1, max_size=30))


def reference_pseudonym(key: bytes, source_id: str) -> str:
    """The pseudonym by its definition: HMAC-SHA256, first 80 bits, Crockford base32."""
    digest = hmac.new(key, source_id.encode("utf-8"), hashlib.sha256).digest()[:10]
    return "S" + base64.b32encode(digest).decode("ascii").translate(RFC4648_TO_CROCKFORD)


# --- pseudonyms ---------------------------------------------------------------------------

@PROPERTY
@given(key=keys, ids=st.lists(source_ids, min_size=1, max_size=50))
def test_pseudonyms_are_the_hmac_of_the_id_in_crockford_base32(key, ids):
    out = deid.pseudonyms(pd.Series(ids, dtype=object), key)
    assert out.tolist() == [reference_pseudonym(key, str(i)) for i in ids]
    pattern = re.compile(deid.PSEUDONYM_PATTERN)
    assert all(pattern.fullmatch(p) for p in out)
    assert not any(set(p[1:]) & set("ILOU") for p in out)


@PROPERTY
@given(key=keys, ids=st.lists(source_ids, min_size=1, max_size=50, unique_by=str))
def test_pseudonyms_are_stable_per_key_whatever_the_order(key, ids):
    first = deid.pseudonyms(pd.Series(ids, dtype=object), key)
    again = deid.pseudonyms(pd.Series(list(reversed(ids)), dtype=object), key)
    assert dict(zip(ids, first, strict=True)) == dict(
        zip(reversed(ids), again, strict=True))


@PROPERTY
@given(one=keys, other=keys, ids=st.lists(source_ids, min_size=1, max_size=100))
def test_different_keys_give_disjoint_pseudonyms(one, other, ids):
    if one == other:
        return
    series = pd.Series(ids, dtype=object)
    assert not set(deid.pseudonyms(series, one)) & set(deid.pseudonyms(series, other))


@settings(PROPERTY, max_examples=3)
@given(key=keys)
def test_no_collision_among_a_hundred_thousand_ids(key):
    ids = pd.Series(np.arange(100_000, dtype=np.int64))
    out = deid.pseudonyms(ids, key)
    assert len(out) == 100_000
    assert out.nunique() == 100_000


def test_an_integer_id_is_hashed_by_its_decimal_text_whatever_its_dtype():
    expected = [reference_pseudonym(KEY, "42"), reference_pseudonym(KEY, "7")]
    for ids in (pd.Series([42, 7]), pd.Series([42, 7], dtype="Int64"),
                pd.Series([42.0, 7.0]), pd.Series(["42", "7"]), pd.Series([42, "7"], dtype=object),
                pd.Series(np.array([42, 7], dtype=np.uint16))):
        assert deid.pseudonyms(ids, KEY).tolist() == expected


def test_missing_ids_stay_missing_and_index_and_name_are_kept():
    ids = pd.Series([5, None, 6], index=[10, 20, 30], name="patient_id", dtype="Int64")
    out = deid.pseudonyms(ids, KEY)
    assert out.index.tolist() == [10, 20, 30]
    assert out.name == "patient_id"
    assert str(out.dtype) == "string"
    assert out.isna().tolist() == [False, True, False]
    assert deid.pseudonyms(pd.Series([], dtype="Int64"), KEY).tolist() == []


@pytest.mark.parametrize("key", [b"", b"short", b"x" * 15])
def test_a_short_key_is_refused(key):
    with pytest.raises(ValueError, match="at least 16"):
        deid.pseudonyms(pd.Series([1]), key)


def test_a_key_that_is_not_bytes_is_refused():
    with pytest.raises(TypeError):
        deid.pseudonyms(pd.Series([1]), "a text key of enough length")


@pytest.mark.parametrize("bad", [True, 1.5, float("inf"), dt.date(2020, 1, 1), b"bytes"])
def test_an_id_that_is_neither_integer_nor_text_is_refused(bad):
    with pytest.raises(TypeError):
        deid.pseudonyms(pd.Series([1, bad], dtype=object), KEY)


def test_a_long_key_is_hashed_as_hmac_hashes_it():
    key = b"k" * 100  # longer than SHA-256's block
    assert deid.pseudonyms(pd.Series(["x"]), key).tolist() == [reference_pseudonym(key, "x")]


def test_release_keys_are_new_each_time_and_long_enough():
    one, other = deid.release_key(), deid.release_key()
    assert one != other
    assert len(one) >= deid.MIN_KEY_BYTES


# --- days from the index date -------------------------------------------------------------

dates = st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(9999, 12, 31))


@PROPERTY
@given(rows=st.lists(st.tuples(dates, dates, dates), min_size=1, max_size=40))
def test_days_from_keeps_every_interval(rows):
    a = pd.Series([r[0] for r in rows])
    b = pd.Series([r[1] for r in rows])
    index = pd.Series([r[2] for r in rows])
    from_a, from_b = deid.days_from(a, index), deid.days_from(b, index)
    assert str(from_a.dtype) == "Int64"
    assert (from_b - from_a).tolist() == [(y - x).days for x, y, _ in rows]
    assert deid.days_from(a, index).tolist() == [(x - i).days for x, _, i in rows]
    assert deid.days_from(index, index).tolist() == [0] * len(rows)


@PROPERTY
@given(rows=st.lists(st.tuples(st.one_of(st.none(), dates), st.one_of(st.none(), dates)),
                     min_size=1, max_size=40))
def test_days_from_is_missing_where_either_date_is(rows):
    out = deid.days_from(pd.Series([r[0] for r in rows], dtype=object),
                         pd.Series([r[1] for r in rows], dtype=object))
    assert out.isna().tolist() == [a is None or i is None for a, i in rows]
    assert [v for v in out if v is not pd.NA] == [
        (a - i).days for a, i in rows if a is not None and i is not None]


def test_days_from_datetime_columns_counts_calendar_days():
    events = pd.Series(pd.to_datetime(
        ["2020-01-05 08:00", "2019-12-31 23:59", None, "1960-03-01 00:01"]).astype(
            "datetime64[s]"), index=list("abcd"), name="onset")
    index = pd.Series(pd.to_datetime(["2020-01-01"] * 4).astype("datetime64[s]"))
    out = deid.days_from(events, index)
    assert out.tolist()[:2] == [4, -1]
    assert out.isna().tolist() == [False, False, True, False]
    assert out.iloc[3] == (dt.date(1960, 3, 1) - dt.date(2020, 1, 1)).days
    assert out.index.tolist() == list("abcd")
    assert out.name == "onset"


def test_days_from_arrow_backed_dates():
    onset = pd.Series(pd.array([dt.date(2020, 1, 5), None], dtype="date32[pyarrow]"))
    index = pd.Series(pd.array([dt.date(2020, 1, 1)] * 2, dtype="date32[pyarrow]"))
    out = deid.days_from(onset, index)
    assert out.iloc[0] == 4
    assert out.iloc[1] is pd.NA


def test_days_from_time_zone_aware_datetimes_count_their_own_date():
    late = pd.Series(pd.to_datetime(["2020-01-01 23:30"]).tz_localize("Asia/Shanghai"))
    assert deid.days_from(late, pd.Series([dt.date(2020, 1, 1)])).tolist() == [0]


def test_days_from_refuses_unequal_lengths_and_non_dates():
    with pytest.raises(ValueError, match="index date"):
        deid.days_from(pd.Series([dt.date(2020, 1, 1)] * 2), pd.Series([dt.date(2020, 1, 1)]))
    for bad in (pd.Series([5]), pd.Series(["2020-01-01"]), pd.Series([dt.date(2020, 1, 1), 5],
                                                                     dtype=object)):
        with pytest.raises(TypeError):
            deid.days_from(bad, pd.Series([dt.date(2020, 1, 1)] * len(bad)))


# --- top-coded ages -----------------------------------------------------------------------

@PROPERTY
@given(ages=st.lists(st.one_of(st.none(), st.integers(min_value=0, max_value=150)),
                     max_size=60),
       top=st.integers(min_value=1, max_value=120))
def test_top_coded_ages_never_show_an_age_at_or_over_the_top(ages, top):
    out = deid.age_top_coded(pd.Series(ages, dtype="Int64"), top=top)
    assert str(out.dtype) == "string"
    for age, text in zip(ages, out, strict=True):
        if age is None:
            assert text is pd.NA
        elif age >= top:
            assert text == f"{top}+"
        else:
            assert text == str(age)
            assert int(text) < top


@PROPERTY
@given(ages=st.lists(st.integers(min_value=0, max_value=150), min_size=1, max_size=60),
       top=st.integers(min_value=1, max_value=120))
def test_top_coding_keeps_the_order_of_ages(ages, top):
    ages = sorted(ages)
    out = deid.age_top_coded(pd.Series(ages), top=top)
    rank = [top if t.endswith("+") else int(t) for t in out]
    assert rank == sorted(rank)
    assert rank == [min(a, top) for a in ages]


def test_top_coding_defaults_to_ninety_and_takes_whole_floats():
    out = deid.age_top_coded(pd.Series([0.0, 89.0, 90.0, np.nan, 104.0], index=list("vwxyz")))
    assert out.tolist()[:3] == ["0", "89", "90+"]
    assert out.iloc[3] is pd.NA
    assert out.iloc[4] == "90+"
    assert out.index.tolist() == list("vwxyz")


@pytest.mark.parametrize(("ages", "message"), [
    ([3, -1], "negative"),
    ([1.5], "whole number"),
    ([np.inf], "infinite"),
    ([True, False], "booleans"),
    (["sixty"], "Unable to parse"),
])
def test_top_coding_refuses_what_is_not_an_age(ages, message):
    with pytest.raises(ValueError, match=message):
        deid.age_top_coded(pd.Series(ages))


@pytest.mark.parametrize("top", [0, -5, 2.5, True])
def test_top_coding_refuses_a_bad_top(top):
    with pytest.raises(ValueError, match="top age"):
        deid.age_top_coded(pd.Series([50]), top=top)
