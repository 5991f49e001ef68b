"""The data-quality dashboard: the registry-wide page comparing sites, a page per site, the
failing records behind a check, CSV exports, and starting a run.

Monitors (and site PIs) see their sites, registry admins all; another site is a 404, and so is
the dashboard for someone who sees no site's data quality.
"""

from __future__ import annotations

import csv

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.text import get_valid_filename
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from registry import access
from registry.csvsafe import spreadsheet_safe
from registry.errors import RegistryError
from registry.models import QualityResult
from registry.selectors.quality import (
    quality_checks,
    quality_failing_records,
    quality_overview,
    quality_runs_recent,
    quality_site_access,
    quality_site_report,
    quality_sites,
)
from registry.services.quality import COHORT, quality_run_request

PAGE_SIZE = 50

# The columns of the CSV export, in order.
CSV_HEADER = ("site", "check", "category", "kind", "description", "failing_rows", "denominator",
              "percentage", "threshold", "passed", "run", "run_finished_at")


def _require_dashboard(request: HttpRequest) -> None:
    if not access.is_registry_admin(request.user) and not quality_sites(request.user).exists():
        raise Http404("No data-quality dashboard for this account.")


@login_required
def overview(request: HttpRequest) -> HttpResponse:
    _require_dashboard(request)
    return render(request, "registry/quality_overview.html", {
        "overview": quality_overview(request.user),
        "runs": quality_runs_recent(request.user),
    })


@login_required
def site_page(request: HttpRequest, code: str) -> HttpResponse:
    site = quality_site_access(request.user, code)
    run, rows = quality_site_report(site)
    return render(request, "registry/quality_site.html", {
        "site": site, "run": run, "rows": rows, "runs": quality_runs_recent(request.user),
    })


@login_required
def failing_records(request: HttpRequest, code: str, check_code: str) -> HttpResponse:
    site = quality_site_access(request.user, code)
    check, result, records = quality_failing_records(request.user, site, check_code)
    page = Paginator(records, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "registry/quality_records.html", {
        "site": site, "check": check, "result": result, "page": page,
        "is_patient": check.kind == COHORT,
        "shown": len(result.failing_ids),
    })


@login_required
@require_POST
def run_start(request: HttpRequest) -> HttpResponse:
    _require_dashboard(request)
    code = request.POST.get("site") or ""
    site = quality_site_access(request.user, code) if code else None
    try:
        quality_run_request(acting_user=request.user, site_ids=[site.pk] if site else None)
    except RegistryError as error:
        messages.error(request, error.summary())
    else:
        messages.success(request, _("Data-quality run queued; its progress is shown below."))
    return redirect("quality_site", code=site.code) if site else redirect("quality_overview")


def _csv_rows(results):
    labels = quality_checks()
    for r in results:
        check = labels.get(r.check_code)
        yield [r.site.code, r.check_code, r.category, r.kind,
               str(check.label) if check else "", r.failing, r.denominator,
               f"{r.percentage:.2f}", f"{r.threshold:.2f}", "pass" if r.passed else "fail",
               r.run_id, r.run.finished_at.isoformat() if r.run.finished_at else ""]


@login_required
def export_csv(request: HttpRequest, code: str | None = None) -> HttpResponse:
    """The latest results of the user's sites (or of one site) as CSV, spreadsheet-safe."""
    if code is None:
        _require_dashboard(request)
        data = quality_overview(request.user)
        results = [cell for _check, cells in data.rows for cell in cells if cell]
        name = "data-quality.csv"
    else:
        site = quality_site_access(request.user, code)
        results = [row.result for row in quality_site_report(site)[1] if row.result]
        name = get_valid_filename(f"data-quality-{site.code}.csv")
    ids = [r.pk for r in results]
    results = (QualityResult.objects.filter(pk__in=ids).select_related("site", "run")
               .order_by("site__code", "category", "check_code"))
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    writer = csv.writer(response)
    writer.writerow(CSV_HEADER)
    for row in _csv_rows(results):
        writer.writerow([spreadsheet_safe(v) for v in row])
    return response
