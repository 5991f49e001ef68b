"""Text written to CSV for people to open in a spreadsheet: a cell that a spreadsheet would run
as a formula (=, +, -, @, tab, carriage return first) is prefixed with a quote, so stored text
is never re-exported as a formula."""

from __future__ import annotations

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text
