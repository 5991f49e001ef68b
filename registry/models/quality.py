"""Data-quality runs: every check of the dashboard over the stored cohort, per site.

A run is one pass of the checks (nightly or on demand) over the sites it covers; a result is
one check at one site in one run: its failing rows, denominator, percentage, threshold and
verdict, and the ids of the first failing records for the drill-down. Results are derived
figures (recomputed by the next run), not clinical records: they carry no history.
"""

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils.translation import gettext_lazy as _

from registry import limits as L
from registry.models.organisation import Site

# A check's code: a rule's code from the rulebook or a completeness check's.
CHECK_CODE_MAX_LENGTH = 64


class QualityRun(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", _("Queued")
        RUNNING = "running", _("Running")
        DONE = "done", _("Done")
        FAILED = "failed", _("Failed")

    # The site ids covered; empty means every site.
    site_ids = models.JSONField(default=list, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True,
        related_name="+",
    )
    status = models.CharField(
        max_length=L.CHOICE_MAX_LENGTH, choices=Status.choices, default=Status.QUEUED
    )
    steps_done = models.PositiveIntegerField(default=0)
    steps_total = models.PositiveIntegerField(default=0)
    message = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["queued", "running", "done", "failed"]),
                name="quality_run_status_valid",
            ),
        ]
        indexes = [models.Index(fields=["status", "-created_at"], name="quality_run_status_idx")]

    def __str__(self) -> str:
        return f"quality run {self.pk} {self.status}"

    @property
    def percent_done(self) -> int:
        return round(100 * self.steps_done / self.steps_total) if self.steps_total else 0


class QualityResult(models.Model):
    class Category(models.TextChoices):
        COMPLETENESS = "completeness", _("Completeness")
        CONFORMANCE = "conformance", _("Conformance")
        PLAUSIBILITY = "plausibility", _("Plausibility")

    run = models.ForeignKey(QualityRun, on_delete=models.CASCADE, related_name="results")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="+")
    check_code = models.CharField(max_length=CHECK_CODE_MAX_LENGTH)
    kind = models.CharField(max_length=L.RECORD_MODEL_MAX_LENGTH)
    category = models.CharField(max_length=L.CHOICE_MAX_LENGTH, choices=Category.choices)
    failing = models.PositiveIntegerField()
    denominator = models.PositiveIntegerField()
    percentage = models.FloatField()  # failing / denominator x 100 (0 when nothing to check)
    threshold = models.FloatField()  # the percentage of failing rows tolerated
    passed = models.BooleanField()
    # The first failing records' ids (of `kind`; patients' for cohort checks), for drill-down.
    failing_ids = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["run", "site", "check_code"]
        constraints = [
            models.UniqueConstraint(fields=["run", "site", "check_code"],
                                    name="quality_result_unique"),
            models.CheckConstraint(condition=Q(failing__lte=F("denominator")),
                                   name="quality_result_failing_within_denominator"),
        ]
        indexes = [models.Index(fields=["site", "check_code", "-run"],
                                name="quality_result_trend_idx")]

    def __str__(self) -> str:
        return f"{self.site_id} {self.check_code}: {self.failing}/{self.denominator}"
