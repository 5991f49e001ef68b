"""The data-quality dashboard's checks and runs (after OHDSI's Data Quality Dashboard).

Two families of check, each over a whole record kind read through the bulk reader in one query:
- the rulebook (registry.rules): every rule (the reader supplies every column a rule reads,
  its context joined in SQL; a rule it could not feed is named in the run's message), as a
  plausibility check (hard rules tolerate no failing row; soft rules a few percent);
- completeness of the key indicators: stage, ECOG, regimen, doses, cycle length, a diagnosis and
  recent follow-up for every patient.

A check's figures per site: failing rows, denominator (the rows the check applies to),
percentage, threshold (the percentage of failing rows tolerated) and pass/fail.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pandas as pd
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from registry import access, rules
from registry.audit import history_user
from registry.errors import NotPermitted
from registry.models import QualityResult, QualityRun, Role, Site
from registry.selectors.bulk import (
    ALL_SITES,
    CONTEXT_COLUMNS,
    KIND_MODELS,
    cohort_frame,
    model_columns,
    records_frame,
)

logger = logging.getLogger(__name__)

# Who sees and runs the dashboard of a site (registry admins see every site).
QUALITY_ROLES: tuple[str, ...] = (Role.MONITOR, Role.SITE_PI)

# The pseudo-kind of checks over the cohort view (one row per patient).
COHORT = "cohort"

# Percent of failing rows tolerated (OHDSI DQD's default is 5 %; a hard rule tolerates none).
HARD_RULE_THRESHOLD = 0.0
SOFT_RULE_THRESHOLD = 5.0

# A patient alive at their last visit is due for follow-up after this many days.
FOLLOWUP_OVERDUE_DAYS = 365

# How many failing record ids a result keeps for the drill-down.
FAILING_IDS_KEPT = 1000

# A run queued or running for longer than this is taken for lost (its worker died): a new
# request for the same sites queues a new run instead of waiting for it.
RUN_STALE_AFTER = dt.timedelta(hours=6)

# How many past runs the trend shows.
TREND_RUNS = 5

Category = QualityResult.Category


@dataclass(frozen=True)
class Check:
    code: str
    kind: str  # a record kind of the bulk reader, or COHORT
    category: str
    label: object  # lazy gettext
    threshold: float
    columns: tuple[str, ...]
    failing: Callable[[pd.DataFrame], pd.Series]  # True where a row fails
    applies: Callable[[pd.DataFrame], pd.Series] | None = None  # the denominator's rows

    def evaluate(self, frame: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
        """(applies, failing) boolean Series over `frame`; a failing row always applies."""
        applies = (self.applies(frame) if self.applies else pd.Series(True, index=frame.index))
        applies = applies.fillna(False).astype(bool)
        failing = self.failing(frame).fillna(False).astype(bool) & applies
        return applies, failing


def _blank(series: pd.Series) -> pd.Series:
    # The services store text stripped, so blank is empty or missing (a vectorised compare).
    return series.isna() | (series == "")


def _followup_overdue(as_of: dt.date) -> Callable[[pd.DataFrame], pd.Series]:
    limit = pd.Timestamp(as_of - dt.timedelta(days=FOLLOWUP_OVERDUE_DAYS))

    def failing(frame: pd.DataFrame) -> pd.Series:
        return frame["last_followup_date"].isna() | (frame["last_followup_date"] < limit)

    return failing


def _followup_expected(frame: pd.DataFrame) -> pd.Series:
    """Patients still followed: not withdrawn, not known dead, not lost to follow-up."""
    return (frame["withdrawn_date"].isna() & frame["death_date"].isna()
            & (frame["last_vital_status"].fillna("alive") == "alive"))


def completeness_checks(*, as_of: dt.date) -> list[Check]:
    """The completeness checks of the key indicators (their follow-up window ends at `as_of`)."""
    return [
        Check("DIAGNOSIS_STAGE_MISSING", "diagnosis", Category.COMPLETENESS,
              _("Diagnosis without a stage group"), 10.0, ("stage_group",),
              lambda f: _blank(f["stage_group"])),
        Check("DIAGNOSIS_ECOG_MISSING", "diagnosis", Category.COMPLETENESS,
              _("Diagnosis without an ECOG performance status"), 10.0, ("ecog",),
              lambda f: f["ecog"].isna()),
        Check("LINE_REGIMEN_MISSING", "treatmentline", Category.COMPLETENESS,
              _("Treatment line without a regimen"), 5.0, ("regimen_term_id",),
              lambda f: f["regimen_term_id"].isna()),
        Check("DRUG_DOSE_MISSING", "drugadministration", Category.COMPLETENESS,
              _("Antineoplastic drug without a dose and unit"), 5.0,
              ("dose", "dose_unit", "purpose"),
              lambda f: f["dose"].isna() | _blank(f["dose_unit"]),
              applies=lambda f: f["purpose"] == "antineoplastic"),
        Check("DIAGNOSIS_CANCER_UNMAPPED", "diagnosis", Category.CONFORMANCE,
              _("Diagnosis whose cancer word is not mapped to a standard concept"), 5.0,
              ("cancer_id",), lambda f: f["cancer_id"].isna()),
        Check("LAB_UNIT_UNCONVERTED", "labresult", Category.CONFORMANCE,
              _("Lab value not converted to its canonical unit"), 5.0,
              ("value", "unit_flag"), lambda f: ~_blank(f["unit_flag"]),
              applies=lambda f: f["value"].notna()),
        Check("CYCLE_LENGTH_MISSING", "cycle", Category.COMPLETENESS,
              _("Cycle without its length in days"), 10.0, ("length_days",),
              lambda f: f["length_days"].isna()),
        Check("PATIENT_DIAGNOSIS_MISSING", COHORT, Category.COMPLETENESS,
              _("Patient without a diagnosis"), 5.0, ("diagnosis_count",),
              lambda f: f["diagnosis_count"] == 0),
        Check("PATIENT_FOLLOWUP_OVERDUE", COHORT, Category.COMPLETENESS,
              _("Patient followed without a visit in the last year"), 20.0,
              ("last_followup_date", "withdrawn_date", "death_date", "last_vital_status"),
              _followup_overdue(as_of), applies=_followup_expected),
    ]


def _rule_check(rule: rules.Rule) -> Check:
    own = tuple(c for c in rule.columns if not c.startswith("ctx_"))
    return Check(
        rule.code, rule.kind, Category.PLAUSIBILITY, rule.message,
        HARD_RULE_THRESHOLD if rule.severity == rules.Severity.HARD else SOFT_RULE_THRESHOLD,
        tuple(rule.columns), rule.failing,
        # A rule passes rows with missing inputs; its denominator is the rows it could judge.
        applies=lambda f, own=own: f[list(own)].notna().all(axis=1) if own
        else pd.Series(True, index=f.index))


def rulebook_checks() -> tuple[list[Check], list[str]]:
    """The rulebook's rules the reader can feed, and the codes of those it cannot."""
    checks, skipped = [], []
    for rule in rules.RULES.values():
        available = (set(model_columns(KIND_MODELS[rule.kind])) | set(CONTEXT_COLUMNS[rule.kind])
                     if rule.kind in KIND_MODELS else set())
        if set(rule.columns) <= available:
            checks.append(_rule_check(rule))
        else:
            skipped.append(rule.code)
    return checks, skipped


def all_checks(*, as_of: dt.date) -> tuple[list[Check], list[str]]:
    checks, skipped = rulebook_checks()
    return [*checks, *completeness_checks(as_of=as_of)], skipped


def check_by_code(code: str) -> Check | None:
    checks, _skipped = all_checks(as_of=timezone.localdate())
    return next((c for c in checks if c.code == code), None)


def check_model(check: Check):
    """The model whose records a check's failing ids name (patients for cohort checks)."""
    return KIND_MODELS["patient" if check.kind == COHORT else check.kind]


def _read(kind: str, columns: Iterable[str], sites) -> pd.DataFrame:
    if kind == COHORT:
        return cohort_frame(sites=sites).rename(columns={"patient_id": "id"})
    return records_frame(kind, sites=sites, columns=sorted(set(columns)))


def _site_figures(check: Check, frame: pd.DataFrame) -> dict[int, dict]:
    """Per site: failing, denominator and the first failing ids."""
    if frame.empty:
        return {}
    applies, failing = check.evaluate(frame)
    site = frame["site_id"]
    denominators = applies.groupby(site).sum()
    failures = failing.groupby(site).sum()
    ids = frame.loc[failing, ["site_id", "id"]].groupby("site_id")["id"]
    first_ids = ids.apply(lambda s: [int(i) for i in s.head(FAILING_IDS_KEPT)])
    return {int(s): {"failing": int(failures.get(s, 0)), "denominator": int(n),
                     "failing_ids": first_ids.get(s, [])} for s, n in denominators.items()}


def _result(run: QualityRun, site_id: int, check: Check, figures: dict | None) -> QualityResult:
    figures = figures or {"failing": 0, "denominator": 0, "failing_ids": []}
    n, bad = figures["denominator"], figures["failing"]
    percentage = 100.0 * bad / n if n else 0.0
    return QualityResult(run=run, site_id=site_id, check_code=check.code, kind=check.kind,
                         category=check.category, failing=bad, denominator=n,
                         percentage=percentage, threshold=check.threshold,
                         passed=percentage <= check.threshold,
                         failing_ids=figures["failing_ids"])


def quality_run_request(*, acting_user: User | None, site_ids: list[int] | None = None
                        ) -> QualityRun:
    """Queue a data-quality run over `site_ids` (None: every site the acting user may see;
    every site for the system). A monitor may run their own sites only; a run already queued
    or running over the same sites is returned instead of a second one."""
    if acting_user is not None:
        allowed = access.site_ids_for(acting_user, QUALITY_ROLES)
        if allowed is not None:
            if not allowed:
                raise NotPermitted(str(_("Only a site's monitor or a registry admin runs "
                                         "its data-quality checks.")))
            site_ids = allowed if site_ids is None else sorted(set(site_ids) & set(allowed))
            if not site_ids:
                raise NotPermitted(str(_("Only a site's monitor or a registry admin runs "
                                         "its data-quality checks.")))
    wanted = sorted(set(site_ids)) if site_ids else []
    with transaction.atomic():
        pending = (QualityRun.objects.select_for_update()
                   .filter(status__in=[QualityRun.Status.QUEUED, QualityRun.Status.RUNNING],
                           site_ids=wanted, created_at__gte=timezone.now() - RUN_STALE_AFTER)
                   .first())
        if pending is not None:
            return pending
        run = QualityRun.objects.create(site_ids=wanted,
                                        requested_by=history_user(acting_user))
        from registry.tasks import quality_run_task

        transaction.on_commit(lambda: quality_run_task.delay(run.pk))
    return run


def _progress(run: QualityRun, **values) -> None:
    # Outside the results' transaction, so the page shows progress while the run reads.
    QualityRun.objects.filter(pk=run.pk).update(**values)


def quality_run_execute(*, run_id: int) -> QualityRun | None:
    """Run every check of run `run_id` over its sites and store the results.

    Safe to run twice: only a queued run is taken (atomically), so a run already running or
    done elsewhere is left alone (None is returned). All results are written in one
    transaction; a failure marks the run failed and writes none.
    """
    claimed = QualityRun.objects.filter(pk=run_id, status=QualityRun.Status.QUEUED).update(
        status=QualityRun.Status.RUNNING, started_at=timezone.now())
    if not claimed:
        return None
    run = QualityRun.objects.get(pk=run_id)
    try:
        _execute(run)
    except Exception as error:
        logger.exception("quality run %s failed", run_id)
        _progress(run, status=QualityRun.Status.FAILED, finished_at=timezone.now(),
                  message=f"{type(error).__name__}: {error}"[:2000])
        raise
    run.refresh_from_db()
    return run


def _execute(run: QualityRun) -> None:
    sites = run.site_ids or ALL_SITES
    site_ids = run.site_ids or list(Site.objects.filter(is_active=True)
                                    .values_list("id", flat=True))
    checks, skipped = all_checks(as_of=timezone.localdate())
    by_kind: dict[str, list[Check]] = {}
    for check in checks:
        by_kind.setdefault(check.kind, []).append(check)
    _progress(run, steps_total=len(by_kind), steps_done=0)
    results = []
    for step, (kind, kind_checks) in enumerate(by_kind.items(), 1):
        columns = {c for check in kind_checks for c in check.columns}
        frame = _read(kind, columns, sites)
        for check in kind_checks:
            figures = _site_figures(check, frame)
            results += [_result(run, s, check, figures.get(s)) for s in site_ids]
        del frame
        _progress(run, steps_done=step)
    message = (str(_("Rules skipped (columns the reader cannot supply): %(codes)s"))
               % {"codes": ", ".join(skipped)}) if skipped else ""
    with transaction.atomic():
        QualityResult.objects.filter(run=run).delete()
        QualityResult.objects.bulk_create(results, batch_size=5000)
        QualityRun.objects.filter(pk=run.pk).update(
            status=QualityRun.Status.DONE, finished_at=timezone.now(), message=message)


def quality_run_nightly() -> QualityRun:
    """Queue the nightly run over every site, as the system account."""
    return quality_run_request(acting_user=None)
