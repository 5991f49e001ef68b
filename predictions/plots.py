"""ROC and calibration plots as inline SVG, drawn on the server (no script: the CSP forbids
inline script, and the pages work without JavaScript). Labels are translated; every number
written into the markup is formatted here, and text goes through format_html."""

from __future__ import annotations

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _

SIZE = 280
PAD = 40


def _xy(x: float, y: float) -> tuple[str, str]:
    span = SIZE - 2 * PAD
    return f"{PAD + span * x:.1f}", f"{SIZE - PAD - span * y:.1f}"


def _frame(title: str, x_label: str, y_label: str, body: SafeString) -> SafeString:
    ticks = format_html_join("", (
        '<text x="{}" y="{}" class="tick" text-anchor="middle">{}</text>'
        '<text x="{}" y="{}" class="tick" text-anchor="end">{}</text>'),
        ((*_xy(t, 0)[:1], f"{SIZE - PAD + 14}", f"{t:.1f}", f"{PAD - 4}",
          f"{float(_xy(0, t)[1]) + 4:.1f}", f"{t:.1f}") for t in (0.0, 0.5, 1.0)))
    x0, y0 = _xy(0, 0)
    x1, y1 = _xy(1, 1)
    return format_html(
        '<svg class="plot" viewBox="0 0 {size} {size}" width="{size}" height="{size}" '
        'role="img" aria-label="{title}"><title>{title}</title>'
        '<rect x="{x0}" y="{y1}" width="{w}" height="{w}" class="axes" fill="none" '
        'stroke="#888"/>'
        '<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y1}" stroke="#bbb" stroke-dasharray="4 3"/>'
        '{body}{ticks}'
        '<text x="{mid}" y="{bottom}" text-anchor="middle" class="label">{x_label}</text>'
        '<text x="12" y="{mid}" text-anchor="middle" class="label" '
        'transform="rotate(-90 12 {mid})">{y_label}</text></svg>',
        size=SIZE, title=title, x0=x0, y0=y0, x1=x1, y1=y1, w=f"{SIZE - 2 * PAD}", body=body,
        ticks=ticks, mid=f"{SIZE / 2:.0f}", bottom=f"{SIZE - 6}", x_label=x_label,
        y_label=y_label)


def roc_svg(points: list[dict], auroc: float | None) -> SafeString:
    """The ROC curve of held-out predictions ([{"fpr", "tpr"}])."""
    path = " ".join(",".join(_xy(p["fpr"], p["tpr"])) for p in points)
    title = _("ROC curve (leave-site-out)")
    if auroc is not None:
        title = _("ROC curve (leave-site-out), AUROC %(auroc).3f") % {"auroc": auroc}
    body = format_html('<polyline points="{}" fill="none" stroke="#1f5fa8" stroke-width="2"/>',
                       path) if points else SafeString("")
    return _frame(title, _("False-positive rate"), _("True-positive rate"), body)


def calibration_svg(points: list[dict]) -> SafeString:
    """Mean predicted against observed risk per bin ([{"predicted", "observed"}])."""
    path = " ".join(",".join(_xy(min(p["predicted"], 1), min(p["observed"], 1)))
                    for p in points)
    dots = format_html_join("", '<circle cx="{}" cy="{}" r="3" fill="#b5442a"/>',
                            (_xy(min(p["predicted"], 1), min(p["observed"], 1))
                             for p in points))
    body = format_html('<polyline points="{}" fill="none" stroke="#b5442a" '
                       'stroke-width="1.5"/>{}', path, dots) if points else SafeString("")
    return _frame(_("Calibration (leave-site-out)"), _("Predicted risk"), _("Observed rate"),
                  body)
