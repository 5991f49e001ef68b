"""Disclosure control of counts that leave the registry (feasibility counts now; the partner
API's aggregates build on it): a count under the minimum cell is never shown, the rest are
rounded, so a reader cannot tell 13 from 12."""

from __future__ import annotations

from dataclasses import dataclass

# PCORnet / CMS minimum cell size: counts 1-10 are not shown.
MIN_CELL = 11
# Shown counts are rounded to the nearest multiple of this.
ROUND_TO = 5


@dataclass(frozen=True)
class Disclosed:
    value: int | None  # the rounded count, None when hidden
    text: str  # what a person sees: "< 11" or "1,235"

    @property
    def hidden(self) -> bool:
        return self.value is None


def disclose(count: int) -> Disclosed:
    """The count as it may be shown."""
    if count < 0:
        raise ValueError("A count cannot be negative.")
    if count < MIN_CELL:
        return Disclosed(None, f"< {MIN_CELL}")
    rounded = int(ROUND_TO * round(count / ROUND_TO))
    return Disclosed(rounded, f"{rounded:,}")
