"""`{% risk_scores patient %}`: the upcoming cycle's risk scores on the patient chart.

The registry's chart template loads this library by name (`{% load risk_scores %}`); the
registry's Python never imports predictions. The chart already checked that the user sees the
patient; this reads that patient's scores only.
"""

from __future__ import annotations

from django import template

from predictions import labels
from predictions.selectors.models import chart_scores

register = template.Library()


@register.inclusion_tag("predictions/_chart_scores.html")
def risk_scores(patient) -> dict:
    cycle, scores = chart_scores(patient)
    rows = []
    for item in scores:
        s = item.score
        rows.append({
            "risk_model": s.risk_model,
            "label": labels.label(labels.RISK_MODEL_LABELS, s.risk_model),
            "version": s.version.number,
            "percent": 100 * s.probability,
            "tier": labels.label(labels.TIER_LABELS, (s.risk_model, s.tier), s.tier),
            "action": labels.label(labels.ACTION_LABELS, s.action),
            "factors": [{"label": labels.label(labels.FEATURE_LABELS, f["feature"]),
                         "value": f.get("value"), "raises": f.get("contribution", 0) > 0}
                        for f in s.factors],
            "scored_at": s.scored_at,
            "stale": item.stale,
        })
    return {"cycle": cycle, "scores": rows}
