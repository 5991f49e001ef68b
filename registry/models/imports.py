"""Import batches: who brought which extract, when, with what checksums, and what came of it."""

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from registry.models.history import history_records
from registry.models.organisation import Site
from registry.storage import import_storage

# The longest upload file name kept (the column, the upload form and the service read this).
SOURCE_NAME_MAX_LENGTH = 255


class ImportBatch(models.Model):
    class Status(models.TextChoices):
        RECEIVED = "received", _("Received")
        RUNNING = "running", _("Running")
        FAILED = "failed", _("Refused: errors")
        NEEDS_MAPPING = "needs_mapping", _("Needs mapping")
        CHECKED = "checked", _("Checked (dry run)")
        IMPORTED = "imported", _("Imported")

    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="+")
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    source_name = models.CharField(max_length=SOURCE_NAME_MAX_LENGTH)
    # A folder or file given to import_extract (the operator's own, never deleted) ...
    stored_path = models.CharField(max_length=500, blank=True)
    # ... or an uploaded extract, kept while the batch may resume, then deleted (or kept for
    # the site's Site.keep_uploads_days). Its name is ours (a random one), not the upload's.
    upload = models.FileField(storage=import_storage, max_length=100, blank=True)
    # Times the batch was found "running" with no worker holding it (a worker died) and run
    # again; past IMPORT_MAX_RESTARTS it is failed.
    restarts = models.PositiveSmallIntegerField(default=0)
    dry_run = models.BooleanField(default=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RECEIVED)
    progress = models.PositiveSmallIntegerField(default=0)  # percent
    stage = models.CharField(max_length=64, blank=True)
    files = models.JSONField(default=dict, blank=True)  # name -> {sha256, bytes, rows, encoding}
    counts = models.JSONField(default=dict, blank=True)  # table -> {created, updated, unchanged}
    errors = models.JSONField(default=list, blank=True)  # [{file, row, column, value, message}]
    unmapped = models.JSONField(default=list, blank=True)  # [{domain, text, rows, suggestions}]

    history = history_records()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["site", "-created_at"], name="import_site_created_idx")]

    def __str__(self) -> str:
        return f"import {self.pk} {self.site_id} {self.status}"

    @property
    def has_extract(self) -> bool:
        """Whether the extract can still be read (to resume)."""
        return bool(self.upload.name or self.stored_path)

    @property
    def can_resume(self) -> bool:
        return self.has_extract and self.status in RESUMABLE


# Statuses a batch ends in (its upload is then released) and those it may resume from.
ENDED = (ImportBatch.Status.FAILED, ImportBatch.Status.CHECKED, ImportBatch.Status.IMPORTED)
RESUMABLE = (ImportBatch.Status.NEEDS_MAPPING, ImportBatch.Status.FAILED)
