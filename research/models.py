"""The data-use committee: who belongs to which organisation, data requests, the committee's
votes and decisions, sites' participation, releases and their downloads.

A request moves draft -> submitted -> (revision requested -> submitted ...) -> approved /
approved with conditions / rejected. Each submission is a numbered revision; votes, recusals and
the decision belong to one revision. An approved request asks each of its sites to opt in, and
its releases contain the opted-in sites only.
"""

from __future__ import annotations

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from registry.models import ApiToken, Site
from registry.models.history import history_records
from research import limits as L


class Organisation(models.Model):
    """A hospital, university or company people work for. Committee members of the requester's
    organisation are recused from its requests; partners' tokens belong to their organisation."""

    class Kind(models.TextChoices):
        HOSPITAL = "hospital", _("Hospital")
        ACADEMIC = "academic", _("University or institute")
        COMPANY = "company", _("Company")
        OTHER = "other", _("Other")

    name = models.CharField(max_length=L.ORGANISATION_NAME_MAX_LENGTH, unique=True)
    kind = models.CharField(max_length=L.CHOICE_MAX_LENGTH, choices=Kind.choices)
    site = models.ForeignKey(Site, on_delete=models.PROTECT, null=True, blank=True,
                             related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    history = history_records()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=~Q(name=""), name="organisation_name_not_empty"),
        ]

    def __str__(self) -> str:
        return self.name


class Affiliation(models.Model):
    """The organisation a person works for (one at a time)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                                related_name="affiliation")
    organisation = models.ForeignKey(Organisation, on_delete=models.PROTECT,
                                     related_name="affiliations")

    history = history_records()

    def __str__(self) -> str:
        return f"{self.user} @ {self.organisation}"


class Purpose(models.TextChoices):
    ACADEMIC = "academic", _("Academic research")
    COMMERCIAL = "commercial", _("Commercial research")


class DataRequest(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", _("Draft")
        SUBMITTED = "submitted", _("Under review")
        REVISION = "revision", _("Revision requested")
        APPROVED = "approved", _("Approved")
        APPROVED_CONDITIONS = "approved_conditions", _("Approved with conditions")
        REJECTED = "rejected", _("Rejected")

    requester = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT,
                                  related_name="data_requests")
    # The requester's organisation when the request was last submitted (recusal reads it).
    organisation = models.ForeignKey(Organisation, on_delete=models.PROTECT, null=True,
                                     blank=True, related_name="+")
    title = models.CharField(max_length=L.TITLE_MAX_LENGTH)
    question = models.TextField(max_length=L.QUESTION_MAX_LENGTH)
    protocol_summary = models.TextField(max_length=L.PROTOCOL_MAX_LENGTH)
    purpose = models.CharField(max_length=L.CHOICE_MAX_LENGTH, choices=Purpose.choices)
    # Cohort criteria (research.criteria reads and validates them): cancer codes, diagnosis
    # years, stage groups, treated with chemotherapy.
    criteria = models.JSONField(default=dict)
    # Names of catalog variables (research.catalog).
    variables = models.JSONField(default=list)
    sites = models.ManyToManyField(Site, related_name="+", blank=True)
    access_days = models.PositiveSmallIntegerField()
    team = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="study_teams",
                                  blank=True)
    status = models.CharField(max_length=L.STATUS_MAX_LENGTH, choices=Status.choices,
                              default=Status.DRAFT)
    # The submission under review (0 while never submitted).
    revision = models.PositiveSmallIntegerField(default=0)
    submitted_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    history = history_records(m2m_fields=[sites, team])

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(access_days__gte=L.ACCESS_DAYS_MIN, access_days__lte=L.ACCESS_DAYS_MAX),
                name="data_request_access_days_range",
            ),
        ]
        indexes = [models.Index(fields=["status", "-id"], name="data_request_status_idx")]

    def __str__(self) -> str:
        return f"{self.reference} {self.title}"

    @property
    def reference(self) -> str:
        return f"DR-{self.pk:05d}" if self.pk else "DR-new"

    @property
    def approved(self) -> bool:
        return self.status in APPROVED_STATUSES


APPROVED_STATUSES = (DataRequest.Status.APPROVED, DataRequest.Status.APPROVED_CONDITIONS)


class VoteChoice(models.TextChoices):
    APPROVE = "approve", _("Approve")
    APPROVE_CONDITIONS = "approve_conditions", _("Approve with conditions")
    REVISE = "revise", _("Revise")
    REJECT = "reject", _("Reject")


class Recusal(models.Model):
    """A committee member who may not vote on a request: declared conflict, or the requester's
    own organisation (recorded when the member tries to vote or when the request is shown)."""

    class Reason(models.TextChoices):
        DECLARED = "declared", _("Declared conflict of interest")
        ORGANISATION = "organisation", _("Same organisation as the requester")

    request = models.ForeignKey(DataRequest, on_delete=models.CASCADE, related_name="recusals")
    member = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT,
                               related_name="+")
    reason = models.CharField(max_length=L.CHOICE_MAX_LENGTH, choices=Reason.choices)
    statement = models.TextField(max_length=L.COMMENT_MAX_LENGTH, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["request", "member"], name="recusal_once"),
        ]

    def __str__(self) -> str:
        return f"{self.member} recused from {self.request_id}"


class Vote(models.Model):
    request = models.ForeignKey(DataRequest, on_delete=models.CASCADE, related_name="votes")
    revision = models.PositiveSmallIntegerField()
    member = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT,
                               related_name="+")
    choice = models.CharField(max_length=L.STATUS_MAX_LENGTH, choices=VoteChoice.choices)
    comment = models.TextField(max_length=L.COMMENT_MAX_LENGTH, blank=True)
    cast_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["cast_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["request", "revision", "member"],
                                    name="vote_once_per_revision"),
        ]

    def __str__(self) -> str:
        return f"{self.member}: {self.choice}"


class Decision(models.Model):
    """The chair's record of the committee's outcome for one revision (never changed)."""

    request = models.ForeignKey(DataRequest, on_delete=models.CASCADE, related_name="decisions")
    revision = models.PositiveSmallIntegerField()
    outcome = models.CharField(max_length=L.STATUS_MAX_LENGTH, choices=VoteChoice.choices)
    conditions = models.TextField(max_length=L.COMMENT_MAX_LENGTH, blank=True)
    chair = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT,
                              related_name="+")
    decided_at = models.DateTimeField(auto_now_add=True)
    # The votes as counted: {"approve": 2, "reject": 1, ..., "eligible": 5, "quorum": 3}.
    tally = models.JSONField(default=dict)
    # The quasi-identifiers (catalog names) the release may contain; the calendar year of
    # diagnosis is one of them, so calendar years appear only if approved here.
    approved_quasi_identifiers = models.JSONField(default=list)
    k_anonymity = models.PositiveSmallIntegerField(default=5)
    access_until = models.DateField(null=True, blank=True)

    class Meta:
        ordering = ["-decided_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["request", "revision"], name="decision_once"),
        ]

    def __str__(self) -> str:
        return f"{self.request_id} r{self.revision}: {self.outcome}"


class SiteParticipation(models.Model):
    class Answer(models.TextChoices):
        PENDING = "pending", _("Awaiting the site's answer")
        OPTED_IN = "opted_in", _("Opted in")
        DECLINED = "declined", _("Declined")

    request = models.ForeignKey(DataRequest, on_delete=models.CASCADE,
                                related_name="participations")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="+")
    answer = models.CharField(max_length=L.CHOICE_MAX_LENGTH, choices=Answer.choices,
                              default=Answer.PENDING)
    answered_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT,
                                    null=True, blank=True, related_name="+")
    answered_at = models.DateTimeField(null=True, blank=True)
    comment = models.TextField(max_length=L.COMMENT_MAX_LENGTH, blank=True)

    history = history_records()

    class Meta:
        ordering = ["request", "site"]
        constraints = [
            models.UniqueConstraint(fields=["request", "site"], name="participation_once"),
        ]

    def __str__(self) -> str:
        return f"{self.site_id}: {self.answer}"


class Release(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", _("Queued")
        BUILDING = "building", _("Building")
        READY = "ready", _("Ready")
        FAILED = "failed", _("Failed")
        EXPIRED = "expired", _("Access ended")

    request = models.ForeignKey(DataRequest, on_delete=models.PROTECT, related_name="releases")
    number = models.PositiveSmallIntegerField()
    status = models.CharField(max_length=L.CHOICE_MAX_LENGTH, choices=Status.choices,
                              default=Status.QUEUED)
    # The clinical record as it stood at this time; a rebuild reads the same snapshot.
    snapshot_at = models.DateTimeField()
    # The release's own pseudonym key (hex): ids of two releases cannot be joined.
    key = models.CharField(max_length=L.KEY_HEX_LENGTH, editable=False)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT,
                                     related_name="+")
    progress = models.PositiveSmallIntegerField(default=0)
    progress_note = models.CharField(max_length=L.NOTE_MAX_LENGTH, blank=True)
    error = models.TextField(blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField()
    patients = models.PositiveIntegerField(default=0)
    manifest = models.JSONField(default=dict)
    k_report = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    history = history_records(excluded_fields=["progress", "progress_note"])

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["request", "number"], name="release_number_once"),
            models.CheckConstraint(condition=Q(progress__lte=100), name="release_progress_pct"),
        ]

    def __str__(self) -> str:
        return f"{self.request.reference}-R{self.number}"

    @property
    def name(self) -> str:
        return str(self)


class ReleaseFile(models.Model):
    release = models.ForeignKey(Release, on_delete=models.CASCADE, related_name="files")
    name = models.CharField(max_length=L.FILE_NAME_MAX_LENGTH)
    bytes = models.BigIntegerField()
    sha256 = models.CharField(max_length=L.KEY_HEX_LENGTH)
    rows = models.BigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["release", "name"]
        constraints = [
            models.UniqueConstraint(fields=["release", "name"], name="release_file_once"),
        ]

    def __str__(self) -> str:
        return self.name


class Download(models.Model):
    class Channel(models.TextChoices):
        WEB = "web", _("Web")
        API = "api", _("API")

    release = models.ForeignKey(Release, on_delete=models.PROTECT, related_name="downloads")
    file = models.ForeignKey(ReleaseFile, on_delete=models.PROTECT, related_name="downloads")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT,
                             related_name="+")
    channel = models.CharField(max_length=L.CHOICE_MAX_LENGTH, choices=Channel.choices)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["release", "-at"], name="download_release_idx")]

    def __str__(self) -> str:
        return f"{self.user} {self.file} {self.at:%Y-%m-%d %H:%M}"


class PartnerQuery(models.Model):
    """One partner API query, answered or refused: the audit log of what left and why, and the
    memory the differencing defence reads (research.services.partner_queries).

    `fingerprint` names the question (a keyed hash of the endpoint, the validated parameters
    and the snapshot's time), so the same question asked again gets the earlier answer for
    free; whether a query is free never depends on the data, or the budget would tell the
    partner which patients two queries covered. `data_digest` names the data the answer was
    computed from (a keyed hash of the cells' sets of patients and of the population), for the
    auditor only. `population` (a serialised roaring bitmap of patient ids) lets the overlap
    audit compare a new query's population with the partner's earlier ones; it flags
    (`overlap_flagged`), never refuses. `true_result` holds the unrounded counts, for the audit
    only, never shown to the partner. Rows are never changed or deleted.
    """

    class Outcome(models.TextChoices):
        ANSWERED = "answered", _("Answered")
        REFUSED_BUDGET = "refused_budget", _("Refused: privacy budget exhausted")

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT,
                             related_name="+", verbose_name=_("user"))
    token = models.ForeignKey(ApiToken, on_delete=models.SET_NULL, null=True, blank=True,
                              related_name="+", verbose_name=_("API token"))
    endpoint = models.CharField(_("endpoint"), max_length=L.ENDPOINT_MAX_LENGTH)
    params = models.JSONField(_("parameters"), default=dict, encoder=DjangoJSONEncoder)
    fingerprint = models.CharField(_("fingerprint"), max_length=L.KEY_HEX_LENGTH,
                                   db_index=True)
    data_digest = models.CharField(_("data digest"), max_length=L.KEY_HEX_LENGTH,
                                   db_index=True)
    population = models.BinaryField(_("population"))
    # The population's size: the audit compares only populations of nearly the same size (two
    # populations whose sizes differ by d differ by at least d patients).
    patients = models.PositiveIntegerField(_("patients"), default=0)
    true_result = models.JSONField(_("true result"), encoder=DjangoJSONEncoder)
    released_result = models.JSONField(_("released result"), null=True, blank=True,
                                       encoder=DjangoJSONEncoder)
    epsilon_charged = models.FloatField(_("epsilon charged"), default=0.0)
    outcome = models.CharField(_("outcome"), max_length=L.CHOICE_MAX_LENGTH,
                               choices=Outcome.choices)
    # Set when the answered population differs by 1 to MIN_CELL-1 patients from one of the
    # partner's earlier answered ones: a possible differencing pair, for the registry admin's
    # review. The answer is released all the same (docs/partner-api.md).
    overlap_flagged = models.BooleanField(_("overlap flagged"), default=False)
    created_at = models.DateTimeField(_("created"), default=timezone.now, editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("partner query")
        verbose_name_plural = _("partner queries")
        indexes = [
            models.Index(fields=["user", "-created_at"], name="partner_query_user_idx"),
            models.Index(fields=["user", "overlap_flagged", "-created_at"],
                         name="partner_query_flagged_idx"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(epsilon_charged__gte=0),
                                   name="partner_query_epsilon_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.user} {self.endpoint} {self.created_at:%Y-%m-%d %H:%M} {self.outcome}"
