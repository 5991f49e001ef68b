"""The one source of every limit on what a person may type: columns, form fields and services
read these, so a value a form accepts always fits its column.

A change here that shortens or widens a column needs a migration (makemigrations finds it).
"""

from __future__ import annotations

from decimal import Decimal

# -- free text ----------------------------------------------------------------------------------

# A reason for a change (edit, unlock, "not mappable"). The history reason column is a text
# column (SIMPLE_HISTORY_HISTORY_CHANGE_REASON_USE_TEXT_FIELD), so the reasons the services
# compose around it (user names, dates, words) always fit.
REASON_MAX_LENGTH = 500
# A site's local word (cancer, drug, regimen, adverse event, lab test, unit) and its
# normalised form.
TERM_TEXT_MAX_LENGTH = 500
# The hospital's patient number as typed (stored only as a keyed hash).
HOSPITAL_NUMBER_MAX_LENGTH = 64
# An HMAC-SHA256 in hex.
HASH_HEX_LENGTH = 64
STAGE_MAX_LENGTH = 16  # stage system and stage group
TNM_MAX_LENGTH = 8  # each of T, N and M
LAB_VALUE_MAX_LENGTH = 64  # a lab value as written
CAUSE_OF_DEATH_MAX_LENGTH = 500
# Biomarkers as typed (EGFR+; ALK-), stored parsed as JSON.
BIOMARKERS_MAX_LENGTH = 500
QUERY_FIELD_MAX_LENGTH = 64  # the field a data query is about
QUERY_TEXT_MAX_LENGTH = 2000  # a data query's question and its answer
# What a person types into a search box or an autocomplete.
SEARCH_MAX_LENGTH = 200
# The registry's pseudonym of a patient (R and 12 characters).
REGISTRY_ID_MAX_LENGTH = 16
SEX_MAX_LENGTH = 1
COMPARATOR_MAX_LENGTH = 2
# Short codes of the choices stored in a column (status, intent, route...).
CHOICE_MAX_LENGTH = 16
SHORT_CHOICE_MAX_LENGTH = 8
CTCAE_VERSION_MAX_LENGTH = 8
RECORD_MODEL_MAX_LENGTH = 32
VOCABULARY_CODE_MAX_LENGTH = 32
VOCABULARY_NAME_MAX_LENGTH = 200
VOCABULARY_VERSION_MAX_LENGTH = 64
CONCEPT_CODE_MAX_LENGTH = 64
CONCEPT_NAME_MAX_LENGTH = 1000
LANGUAGE_CODE_MAX_LENGTH = 8

# -- numbers --------------------------------------------------------------------------------------

# A dose per administration: up to 9,999,999.999 in its unit.
DOSE_MAX_DIGITS = 10
DOSE_DECIMAL_PLACES = 3
# Body surface area in m²: the column holds 0.00-99.99; what is plausible is the rulebook's.
BSA_MAX_DIGITS = 4
BSA_DECIMAL_PLACES = 2
BIRTH_YEAR_MIN = 1900
BIRTH_YEAR_MAX = 2100  # the column's check; the service also refuses years after this one
ECOG_MIN, ECOG_MAX = 0, 4
# A record's version (a PostgreSQL integer column).
VERSION_MAX = 2**31 - 1
LINE_NO_MAX = 20
CYCLE_NO_MAX = 100
CYCLE_LENGTH_DAYS_MAX = 90
CYCLE_DAY_MAX = 60


def decimal_limit(max_digits: int, decimal_places: int) -> Decimal:
    """The largest value a NUMERIC(max_digits, decimal_places) column holds."""
    return Decimal(10) ** (max_digits - decimal_places) - Decimal(10) ** -decimal_places


def decimal_problem(value: Decimal, *, max_digits: int, decimal_places: int) -> str | None:
    """Why `value` does not fit a NUMERIC(max_digits, decimal_places) column, or None."""
    if not value.is_finite():
        return "is not a finite number"
    if abs(value) > decimal_limit(max_digits, decimal_places):
        return f"is larger than {decimal_limit(max_digits, decimal_places):f}"
    exponent = value.normalize().as_tuple().exponent
    if isinstance(exponent, int) and -exponent > decimal_places:
        return f"has more than {decimal_places} decimal places"
    return None

