"""Reads of the data-quality dashboard: the sites a user may see there, their latest results and
trend, and the failing records behind a result, always through registry.access."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.contrib.auth.models import AnonymousUser, User
from django.db.models import QuerySet
from django.http import Http404
from django.utils import timezone

from registry import access
from registry.models import QualityResult, QualityRun, Site
from registry.services.quality import (
    QUALITY_ROLES,
    TREND_RUNS,
    Check,
    all_checks,
    check_by_code,
    check_model,
)

AnyUser = User | AnonymousUser


def quality_sites(user: AnyUser) -> QuerySet[Site]:
    """The sites whose data quality the user sees: a monitor's (or site PI's) sites; all for
    registry admins."""
    return access.scope(Site.objects.filter(is_active=True), user, roles=QUALITY_ROLES)


def quality_site_access(user: AnyUser, code: str) -> Site:
    """The site, if the user sees its data quality; else 404 (never confirming it exists)."""
    return access.access_site_for_role(user, code, QUALITY_ROLES)


def quality_runs_recent(user: AnyUser, limit: int = TREND_RUNS) -> list[QualityRun]:
    """The latest runs that cover any of the user's sites (progress of the current one)."""
    ids = set(quality_sites(user).values_list("id", flat=True))
    runs = []
    for run in QualityRun.objects.order_by("-created_at", "-id")[: limit * 20]:
        if not run.site_ids or ids & set(run.site_ids):
            runs.append(run)
        if len(runs) == limit:
            break
    return runs


@dataclass
class Row:
    check: Check
    result: QualityResult | None
    trend: list[QualityResult] = field(default_factory=list)  # oldest first, latest last


def quality_checks() -> dict[str, Check]:
    """Every check of the dashboard, by code."""
    return {c.code: c for c in all_checks(as_of=timezone.localdate())[0]}


def quality_site_report(site: Site) -> tuple[QualityRun | None, list[Row]]:
    """The site's latest finished run and, per check, its result there and the trend over the
    last TREND_RUNS finished runs that covered the site."""
    results = (QualityResult.objects.filter(site=site, run__status=QualityRun.Status.DONE)
               .select_related("run").order_by("-run__created_at", "-run_id"))
    run_ids = list(dict.fromkeys(results.values_list("run_id", flat=True)))[:TREND_RUNS]
    if not run_ids:
        return None, []
    by_check: dict[str, list[QualityResult]] = {}
    for result in results.filter(run_id__in=run_ids):
        by_check.setdefault(result.check_code, []).append(result)
    latest = QualityRun.objects.get(pk=run_ids[0])
    checks = quality_checks()
    rows = []
    for code, history in by_check.items():
        check = checks.get(code)
        if check is None:  # a rule since removed from the rulebook: shown no more
            continue
        current = history[0] if history[0].run_id == latest.pk else None
        rows.append(Row(check=check, result=current, trend=list(reversed(history))))
    rows.sort(key=lambda r: (r.check.category, r.check.code))
    return latest, rows


@dataclass
class Overview:
    sites: list[Site]
    rows: list[tuple[Check, list[QualityResult | None]]]  # per check, one cell per site


def quality_overview(user: AnyUser) -> Overview:
    """Every check against every site the user sees, from each site's latest finished run."""
    sites = list(quality_sites(user))
    checks = sorted(quality_checks().values(), key=lambda c: (c.category, c.code))
    latest: dict[int, int] = {}
    for site_id, run_id in (QualityResult.objects
                            .filter(site__in=sites, run__status=QualityRun.Status.DONE)
                            .order_by("site_id", "-run__created_at", "-run_id")
                            .distinct("site_id").values_list("site_id", "run_id")):
        latest[site_id] = run_id
    found = {(r.site_id, r.check_code): r for r in QualityResult.objects.filter(
        run_id__in=set(latest.values()), site__in=sites)
        if latest.get(r.site_id) == r.run_id}
    rows = [(c, [found.get((s.pk, c.code)) for s in sites]) for c in checks]
    return Overview(sites=sites, rows=rows)


def quality_failing_records(user: AnyUser, site: Site, code: str):
    """The check and the records behind its latest result at `site` that the user may see
    (another site's rows never, even by a forged id list)."""
    check = check_by_code(code)
    if check is None:
        raise Http404("Unknown check.")
    result = (QualityResult.objects.filter(site=site, check_code=code,
                                           run__status=QualityRun.Status.DONE)
              .order_by("-run__created_at", "-run_id").first())
    if result is None:
        raise Http404("No result for this check.")
    model = check_model(check)
    records = access.scope(model.objects.filter(site=site, pk__in=result.failing_ids), user)
    if model._meta.model_name != "patient":
        records = records.select_related("patient")
    return check, result, records.order_by("pk")
