"""Biomarkers as a clerk writes them ("EGFR+; ALK-; PD-L1 50%") and as stored (a dict)."""

from __future__ import annotations


def parse_biomarkers(text: str) -> dict[str, str]:
    """'EGFR+; ALK-; PD-L1 50%' -> {"EGFR": "+", "ALK": "-", "PD-L1": "50%"}."""
    out = {}
    for part in (text or "").replace("；", ";").split(";"):
        part = part.strip()
        if not part:
            continue
        if part[-1] in "+-":
            out[part[:-1].strip()] = part[-1]
        elif " " in part:
            name, value = part.rsplit(" ", 1)
            out[name.strip()] = value.strip()
        else:
            out[part] = ""
    return out


def format_biomarkers(value: dict) -> str:
    return "; ".join(f"{k}{v}" if v in ("+", "-") else f"{k} {v}".strip()
                     for k, v in (value or {}).items())
