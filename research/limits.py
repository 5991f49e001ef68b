"""The one source of every limit on what a person may type or ask for in the research app:
columns, forms, the API and services read these."""

from __future__ import annotations

from registry.limits import CHOICE_MAX_LENGTH

ORGANISATION_NAME_MAX_LENGTH = 200
TITLE_MAX_LENGTH = 200
QUESTION_MAX_LENGTH = 4000
PROTOCOL_MAX_LENGTH = 20000
COMMENT_MAX_LENGTH = 4000  # a vote's comment, a decision's conditions, a site's answer
STATUS_MAX_LENGTH = 24
NOTE_MAX_LENGTH = 200
FILE_NAME_MAX_LENGTH = 100
KEY_HEX_LENGTH = 64
# How long an approved team may download (days from the decision).
ACCESS_DAYS_MIN, ACCESS_DAYS_MAX = 30, 1095
# Cohort criteria: how many codes, stages and the year range a request may name.
CRITERIA_LIST_MAX = 50
CRITERIA_CODE_MAX_LENGTH = 16
DIAGNOSIS_YEAR_MIN, DIAGNOSIS_YEAR_MAX = 1990, 2100
TEAM_MAX = 50
# Partner aggregates and feasibility: values one filter or criterion may list, lab criteria
# one query may hold, the prior lines a criterion may name, the size of a lab bound (canonical
# units; no lab value comes near), the length of a biomarker value or a filter value.
PARTNER_VALUES_MAX = CRITERIA_LIST_MAX
PARTNER_LABS_MAX = 10
PRIOR_LINES_MAX = 30
LAB_BOUND_ABS_MAX = 1e9
BIOMARKER_VALUE_MAX_LENGTH = 16
PARTNER_VALUE_MAX_LENGTH = 64
# k of k-anonymity the committee may require.
K_MIN, K_MAX = 2, 100
# The name of a partner API endpoint in the query log (its URL name).
ENDPOINT_MAX_LENGTH = 100

__all__ = [
    "ACCESS_DAYS_MAX", "ACCESS_DAYS_MIN", "BIOMARKER_VALUE_MAX_LENGTH", "CHOICE_MAX_LENGTH",
    "COMMENT_MAX_LENGTH", "LAB_BOUND_ABS_MAX", "PARTNER_LABS_MAX", "PARTNER_VALUES_MAX",
    "PARTNER_VALUE_MAX_LENGTH", "PRIOR_LINES_MAX",
    "CRITERIA_CODE_MAX_LENGTH", "CRITERIA_LIST_MAX", "DIAGNOSIS_YEAR_MAX", "DIAGNOSIS_YEAR_MIN",
    "ENDPOINT_MAX_LENGTH",
    "FILE_NAME_MAX_LENGTH", "KEY_HEX_LENGTH", "K_MAX", "K_MIN", "NOTE_MAX_LENGTH",
    "ORGANISATION_NAME_MAX_LENGTH", "PROTOCOL_MAX_LENGTH", "QUESTION_MAX_LENGTH",
    "STATUS_MAX_LENGTH", "TEAM_MAX", "TITLE_MAX_LENGTH",
]
