"""Data queries: a monitor's (or an edit check's) question on a field of a record."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from registry import limits as L
from registry.models.clinical import Patient
from registry.models.history import history_records
from registry.models.organisation import Site


class DataQuery(models.Model):
    class Status(models.TextChoices):
        OPEN = "open", _("Open")
        ANSWERED = "answered", _("Answered")
        CLOSED = "closed", _("Closed")

    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="+")
    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="queries")
    record_model = models.CharField(max_length=L.RECORD_MODEL_MAX_LENGTH)  # e.g. "adverseevent"
    record_id = models.BigIntegerField()
    field = models.CharField(max_length=L.QUERY_FIELD_MAX_LENGTH, blank=True)
    text = models.TextField()
    automatic = models.BooleanField(default=False)  # opened by an edit check, not a person
    status = models.CharField(
        max_length=L.CHOICE_MAX_LENGTH, choices=Status.choices, default=Status.OPEN
    )
    opened_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True,
        related_name="+",
    )
    opened_at = models.DateTimeField(auto_now_add=True)
    answer = models.TextField(blank=True)
    answered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True,
        related_name="+",
    )
    answered_at = models.DateTimeField(null=True, blank=True)
    closed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True,
        related_name="+",
    )
    closed_at = models.DateTimeField(null=True, blank=True)

    history = history_records()

    class Meta:
        ordering = ["-opened_at"]
        verbose_name_plural = "data queries"
        indexes = [
            models.Index(fields=["site", "status"], name="query_site_status_idx"),
            models.Index(fields=["record_model", "record_id"], name="query_record_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["open", "answered", "closed"]), name="query_status_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.record_model}#{self.record_id} {self.field}: {self.status}"
