"""De-identification of one release: study-specific pseudonyms, dates as days from the
patient's index date, top-coded ages.

A release's pseudonyms are a keyed hash (HMAC-SHA256) of the source id under a key drawn for
that release alone (`release_key`): the same key gives the same pseudonym (a rebuild of the
release is identical), another release's key gives pseudonyms that cannot be linked to these on
id. Dates leave a release only as whole days from the patient's index date (the first
diagnosis), which keeps every interval between a patient's events. Ages over 89 are pooled
as "90+" (HIPAA Safe Harbor).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import uuid

import numpy as np
import pandas as pd

PSEUDONYM_PREFIX = "S"
# Crockford's base32: digits and capitals without I, L, O and U (nothing to misread).
CROCKFORD_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
PSEUDONYM_CHARS = 16  # 16 base32 characters: the first 80 bits of the HMAC
PSEUDONYM_LENGTH = len(PSEUDONYM_PREFIX) + PSEUDONYM_CHARS
PSEUDONYM_PATTERN = rf"^{PSEUDONYM_PREFIX}[{CROCKFORD_ALPHABET}]{{{PSEUDONYM_CHARS}}}$"
MIN_KEY_BYTES = 16
RELEASE_KEY_BYTES = 32
AGE_TOP = 90

_DIGEST_BYTES = PSEUDONYM_CHARS * 5 // 8
_SHA256_BLOCK = 64
_ALPHABET = np.frombuffer(CROCKFORD_ALPHABET.encode("ascii"), dtype=np.uint8)
_BIT_WEIGHTS = np.array([16, 8, 4, 2, 1], dtype=np.uint8)


def release_key() -> bytes:
    """A new random key for one release's pseudonyms (kept secret with the release)."""
    return secrets.token_bytes(RELEASE_KEY_BYTES)


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes | bytearray):
        raise TypeError("The pseudonym key must be bytes.")
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(
            f"The pseudonym key is {len(key)} bytes; at least {MIN_KEY_BYTES} are needed.")


def _id_text(value: object) -> str:
    """The text of a source id that is hashed: an integer in decimal, a text as given (UTF-8),
    a UUID in its canonical form. Anything else is refused rather than guessed at."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | np.bool_):
        raise TypeError(f"A source id must be an integer or a text, not {value!r}.")
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"A source id must be an integer or a text, not {value!r}.")


def _hmac_prefixes(messages: list[bytes], key: bytes) -> bytes:
    # HMAC-SHA256 (RFC 2104) with the key's inner and outer states computed once: hmac.digest
    # would redo them for each of several hundred thousand ids.
    if len(key) > _SHA256_BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_SHA256_BLOCK, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key)).copy
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key)).copy
    parts = []
    for message in messages:
        i = inner()
        i.update(message)
        o = outer()
        o.update(i.digest())
        parts.append(o.digest()[:_DIGEST_BYTES])
    return b"".join(parts)


def _crockford(prefixes: bytes, n: int) -> np.ndarray:
    """Each 10-byte prefix as the prefix letter and 16 base32 characters (array of str)."""
    if n == 0:
        return np.array([], dtype=f"U{PSEUDONYM_LENGTH}")
    raw = np.frombuffer(prefixes, dtype=np.uint8).reshape(n, _DIGEST_BYTES)
    groups = np.unpackbits(raw, axis=1).reshape(n, PSEUDONYM_CHARS, 5) @ _BIT_WEIGHTS
    out = np.empty((n, PSEUDONYM_LENGTH), dtype=np.uint8)
    out[:, 0] = ord(PSEUDONYM_PREFIX)
    out[:, 1:] = _ALPHABET[groups]
    return out.view(f"S{PSEUDONYM_LENGTH}").ravel().astype(f"U{PSEUDONYM_LENGTH}")


def pseudonyms(ids: pd.Series, key: bytes) -> pd.Series:
    """The release's pseudonym of each source id: "S" and 16 Crockford base32 characters of
    HMAC-SHA256(key, id). Same key and id, same pseudonym; another key, unlinkable ones.

    Ids are integers (any integer dtype, or integral floats), texts or UUIDs; a missing id
    stays missing. Returns a "string" Series on the same index, named as `ids`.
    """
    _check_key(key)
    missing = ids.isna().to_numpy()
    if pd.api.types.is_integer_dtype(ids.dtype):
        texts = [str(v) for v in ids[~missing].tolist()]
    else:
        texts = [_id_text(v) for v in ids.to_numpy(dtype=object)[~missing]]
    messages = [text.encode("utf-8") for text in texts]
    encoded = _crockford(_hmac_prefixes(messages, bytes(key)), len(messages))
    out = np.full(len(ids), pd.NA, dtype=object)
    out[~missing] = encoded
    return pd.Series(out, index=ids.index, name=ids.name, dtype="string")


def _as_calendar_day(value: object) -> object:
    # A datetime counts by its own wall-clock date (a time zone is not converted).
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date | np.datetime64):
        return value
    raise TypeError(f"Expected a date, not {value!r}.")


def _days_since_epoch(dates: pd.Series) -> np.ndarray:
    """Calendar days since 1970-01-01 as float64 (NaN where missing); datetimes count by
    their date, whatever their time of day."""
    if isinstance(dates.dtype, pd.DatetimeTZDtype):
        dates = dates.dt.tz_localize(None)
    if isinstance(dates.dtype, np.dtype) and dates.dtype.kind == "M":
        days = dates.to_numpy().astype("datetime64[D]")
    else:
        values = dates.to_numpy(dtype=object)
        missing = pd.isna(values)
        days = np.full(len(values), np.datetime64("NaT"), dtype="datetime64[D]")
        days[~missing] = np.array(
            [_as_calendar_day(v) for v in values[~missing]], dtype="datetime64[D]")
    numbers = days.astype(np.int64).astype(np.float64)
    numbers[np.isnat(days)] = np.nan
    return numbers


def days_from(dates: pd.Series, index_dates: pd.Series) -> pd.Series:
    """Whole days from each row's index date to its date (negative before it), as Int64;
    missing where either is missing.

    The two Series are paired by position (the caller maps each row's patient to their index
    date), and must be of equal length. The result has the index and name of `dates`.
    """
    if len(dates) != len(index_dates):
        raise ValueError(
            f"{len(dates)} dates and {len(index_dates)} index dates: one index date per date "
            "is needed.")
    difference = _days_since_epoch(dates) - _days_since_epoch(index_dates)
    return pd.Series(pd.array(difference, dtype="Int64"), index=dates.index, name=dates.name)


def age_top_coded(ages: pd.Series, top: int = AGE_TOP) -> pd.Series:
    """Ages in whole years as text, `top` and above pooled as f"{top}+"; missing stays
    missing. Negative, fractional or infinite ages are refused (ValueError)."""
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ValueError(f"The top age must be a positive integer, not {top!r}.")
    if ages.dtype.kind == "b" or isinstance(ages.dtype, pd.BooleanDtype):
        raise ValueError("Ages must be numbers, not booleans.")
    values = pd.to_numeric(ages, errors="raise").astype("Float64")
    numbers = values.to_numpy(dtype=np.float64, na_value=np.nan)
    present = ~np.isnan(numbers)
    given = numbers[present]
    if not np.isfinite(given).all():
        raise ValueError("An age is infinite.")
    if (given < 0).any():
        raise ValueError(f"An age is negative ({given.min():g}).")
    if (given != np.floor(given)).any():
        raise ValueError("An age is not a whole number of years.")
    out = np.full(len(numbers), pd.NA, dtype=object)
    whole = given.astype(np.int64)
    out[present] = np.where(whole >= top, f"{top}+", whole.astype(str)).astype(object)
    return pd.Series(out, index=ages.index, name=ages.name, dtype="string")
