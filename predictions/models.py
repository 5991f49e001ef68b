"""Risk models served by the registry: immutable versions, the champion alias and every move
of it, training runs, and the score of each cycle.

The risk models themselves are defined in code (predictions.ml.definitions); rows name them
by their key ("cinv", "neutropenia"). A version is written once, with its artifact, by the
training service and never changed (predictions.services.versions refuses). The champion is
an alias that moves; each move is an AliasMove row (who or the system, when, why, the metrics
then). Training runs and scores are derived, operational rows: recomputed, not entered, so
they carry no history; the alias does.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from predictions.ml.definitions import DEFINITIONS
from registry import limits as L
from registry.errors import ValidationFailed
from registry.models import Cycle
from registry.models.history import history_records

RISK_MODEL_MAX_LENGTH = 32
ALGORITHM_MAX_LENGTH = 64
ARTIFACT_NAME_MAX_LENGTH = 255
TIER_MAX_LENGTH = 32
ACTION_MAX_LENGTH = 64

RISK_MODEL_CHOICES = [(name, d.label) for name, d in DEFINITIONS.items()]


class TrainingRun(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", _("Queued")
        RUNNING = "running", _("Running")
        DONE = "done", _("Done")
        FAILED = "failed", _("Failed")

    class Trigger(models.TextChoices):
        NIGHTLY = "nightly", _("Nightly schedule")
        GROWTH = "growth", _("Cohort grew")
        MANUAL = "manual", _("Requested")

    trigger = models.CharField(max_length=L.CHOICE_MAX_LENGTH, choices=Trigger.choices)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT,
                                     null=True, blank=True, related_name="+")
    status = models.CharField(max_length=L.CHOICE_MAX_LENGTH, choices=Status.choices,
                              default=Status.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0)  # percent, 0-100
    log = models.TextField(blank=True)
    error = models.TextField(blank=True)
    # Times a run left "running" by a dead worker was started again.
    restarts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=["queued", "running", "done", "failed"]),
                                   name="training_run_status_valid"),
            models.CheckConstraint(condition=Q(progress__lte=100),
                                   name="training_run_progress_percent"),
        ]

    def __str__(self) -> str:
        return f"training run {self.pk} {self.status}"


class VersionImmutable(ValidationFailed):
    """A saved model version was about to change."""


class ModelVersion(models.Model):
    """One trained model: what it is, what it was trained on, how it did on hospitals it never
    saw, and its artifact (named by its SHA-256, refused on load when the bytes differ)."""

    risk_model = models.CharField(max_length=RISK_MODEL_MAX_LENGTH, choices=RISK_MODEL_CHOICES)
    number = models.PositiveIntegerField()
    algorithm = models.CharField(max_length=ALGORITHM_MAX_LENGTH)
    params = models.JSONField(default=dict)
    recalibration = models.CharField(max_length=L.CHOICE_MAX_LENGTH, blank=True)
    # cycles, patients, sites, first and last cycle date, as_of (the extraction's snapshot).
    snapshot = models.JSONField(default=dict)
    fingerprint = models.CharField(max_length=L.HASH_HEX_LENGTH)
    cycles = models.PositiveIntegerField()
    events = models.PositiveIntegerField()
    # The chosen candidate's leave-site-out metrics (train_models --json champion keys).
    metrics = models.JSONField(default=dict)
    candidates = models.JSONField(default=list)
    per_site = models.JSONField(default=list)
    calibration_curve = models.JSONField(default=list)
    roc_curve = models.JSONField(default=list)  # [{"fpr", "tpr"}], held-out predictions
    folds = models.JSONField(default=list)
    artifact = models.CharField(max_length=ARTIFACT_NAME_MAX_LENGTH)
    artifact_sha256 = models.CharField(max_length=L.HASH_HEX_LENGTH)
    # Held-out (leave-site-out) predictions keyed by cycle id, for paired comparisons.
    holdout = models.CharField(max_length=ARTIFACT_NAME_MAX_LENGTH)
    holdout_sha256 = models.CharField(max_length=L.HASH_HEX_LENGTH)
    training_run = models.ForeignKey(TrainingRun, on_delete=models.PROTECT, null=True,
                                     blank=True, related_name="versions")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["risk_model", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["risk_model", "number"],
                                    name="model_version_unique_number"),
            models.UniqueConstraint(fields=["risk_model", "training_run"],
                                    name="model_version_one_per_run"),
            models.CheckConstraint(condition=Q(events__lte=models.F("cycles")),
                                   name="model_version_events_within_cycles"),
        ]

    def __str__(self) -> str:
        return f"{self.risk_model} v{self.number}"

    def save(self, *args, **kwargs) -> None:
        # Immutable once written (PostgreSQL also refuses an UPDATE of the row: migration 0002).
        if not self._state.adding:
            raise VersionImmutable("A model version never changes; train a new version.")
        super().save(*args, **kwargs)


class Alias(models.Model):
    """The version a risk model serves under a name ("champion")."""

    class Name(models.TextChoices):
        CHAMPION = "champion", _("Champion")

    risk_model = models.CharField(max_length=RISK_MODEL_MAX_LENGTH, choices=RISK_MODEL_CHOICES)
    name = models.CharField(max_length=L.CHOICE_MAX_LENGTH, choices=Name.choices,
                            default=Name.CHAMPION)
    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    moved_at = models.DateTimeField()

    history = history_records()

    class Meta:
        ordering = ["risk_model", "name"]
        constraints = [
            models.UniqueConstraint(fields=["risk_model", "name"], name="alias_unique_name"),
        ]

    def __str__(self) -> str:
        return f"{self.risk_model}@{self.name} -> v{self.version.number}"


class AliasMove(models.Model):
    """One move of an alias, kept for ever (append-only): from which version to which, by whom
    (empty: the system), when, why, and the figures the decision read."""

    class Kind(models.TextChoices):
        AUTOMATIC = "automatic", _("Promoted automatically")
        PROMOTE = "promote", _("Promoted by hand")
        ROLLBACK = "rollback", _("Rolled back by hand")

    risk_model = models.CharField(max_length=RISK_MODEL_MAX_LENGTH, choices=RISK_MODEL_CHOICES)
    alias = models.CharField(max_length=L.CHOICE_MAX_LENGTH, choices=Alias.Name.choices,
                             default=Alias.Name.CHAMPION)
    kind = models.CharField(max_length=L.CHOICE_MAX_LENGTH, choices=Kind.choices)
    from_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, null=True,
                                     blank=True, related_name="+")
    to_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    moved_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True,
                                 blank=True, related_name="+")
    moved_at = models.DateTimeField()
    reason = models.TextField()
    metrics = models.JSONField(default=dict)

    class Meta:
        ordering = ["-moved_at", "-id"]

    def __str__(self) -> str:
        return f"{self.risk_model} {self.kind} -> v{self.to_version_id}"


class PromotionCheck(models.Model):
    """The automatic promotion rule's verdict on a new version (kept whether it moved the
    champion or not, so a challenger's page says why it stayed a challenger)."""

    version = models.OneToOneField(ModelVersion, on_delete=models.CASCADE,
                                   related_name="promotion_check")
    against = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, null=True, blank=True,
                                related_name="+")
    promoted = models.BooleanField()
    reasons = models.JSONField(default=list)  # why not, one sentence each (empty if promoted)
    figures = models.JSONField(default=dict)
    checked_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.version}: {'promoted' if self.promoted else 'challenger'}"


class RiskScore(models.Model):
    """A cycle's predicted risk under a risk model's champion: probability, tier, the action
    the tier recommends, the main contributing factors, and the snapshot time its inputs were
    read at (a later change to the patient's records makes it stale)."""

    cycle = models.ForeignKey(Cycle, on_delete=models.CASCADE, related_name="+")
    risk_model = models.CharField(max_length=RISK_MODEL_MAX_LENGTH, choices=RISK_MODEL_CHOICES)
    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    probability = models.FloatField()
    tier = models.CharField(max_length=TIER_MAX_LENGTH)
    action = models.CharField(max_length=ACTION_MAX_LENGTH)
    factors = models.JSONField(default=list, blank=True)
    inputs_as_of = models.DateTimeField()
    scored_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["cycle", "risk_model"],
                                    name="risk_score_one_per_cycle_and_model"),
            models.CheckConstraint(condition=Q(probability__gte=0, probability__lte=1),
                                   name="risk_score_probability_range"),
        ]

    def __str__(self) -> str:
        return f"cycle {self.cycle_id} {self.risk_model}: {self.probability:.3f}"
