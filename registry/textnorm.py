"""Normalisation of local words, so DDP, ｄｄｐ and " ddp." compare equal."""

from __future__ import annotations

import re
import unicodedata

_PUNCT = re.compile(r"[\s\-_.,;:()\[\]{}'\"`/\\·•、，。；：（）【】]+")


def normalise_term(text: str) -> str:
    """NFKC (folds full width to half width), case-folded, punctuation and spaces removed.

    Characters that carry meaning in units and lab names (*, ^, %, <, >, digits) are kept.
    """
    folded = unicodedata.normalize("NFKC", text or "").casefold()
    return _PUNCT.sub("", folded)


def normalise_unit(text: str) -> str:
    """Units are compared case-sensitively (G/L is 10^9/L, g/L is grams), with µ/μ spelled u,
    × spelled x, spaces dropped, and only the litre's case forgiven (g/l, mg/dl, ng/ml)."""
    folded = unicodedata.normalize("NFKC", text or "").strip()
    folded = folded.replace("μ", "u").replace("µ", "u").replace("×", "x")
    folded = re.sub(r"\s+", "", folded)
    folded = re.sub(r"(?<=/)(d|m|u)?l$", lambda m: (m.group(1) or "") + "L", folded)
    return re.sub(r"^(iu|u)/", lambda m: m.group(1).upper() + "/", folded)
