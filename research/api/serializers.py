"""Inputs and outputs the committee's endpoints share (research/api/views.py).

Inputs refuse what they do not know (`StrictInput`: an unknown field is a 400 naming it, never
silently dropped) and take text only as text (`TextField`); their limits are research/limits.py's,
the ones the columns and the services read. The services check the rules (research/services/),
so an input here checks types and sizes, not the committee's rules a second time.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field, extend_schema_serializer
from rest_framework import serializers

from registry.api.inputs import StrictInput
from registry.models import Site
from research import catalog
from research import limits as L
from research.disclosure import MIN_CELL, ROUND_TO
from research.models import (
    DataRequest,
    Purpose,
    Recusal,
    Release,
    SiteParticipation,
    VoteChoice,
)

SITE_CODE_MAX_LENGTH = Site._meta.get_field("code").max_length
USERNAME_MAX_LENGTH = User._meta.get_field("username").max_length


class TextField(serializers.CharField):
    """Text, and only text: a number, a boolean or a list where text belongs is refused rather
    than turned into text. NUL characters are refused (DRF's CharField)."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


# -- the variable catalog -----------------------------------------------------------------------


@extend_schema_serializer(component_name="VariableValue")
class VariableValueOutput(serializers.Serializer):
    code = serializers.CharField(help_text="The value as stored and released.")
    label_en = serializers.CharField()
    label_zh = serializers.CharField()


@extend_schema_serializer(component_name="Variable")
class VariableOutput(serializers.Serializer):
    """One variable of the catalog (research/catalog.py). `class` is `direct` (never released,
    refused in requests), `quasi` (released only when the committee approves it by name) or
    `clinical`."""

    name = serializers.CharField(help_text='The record kind and the column, e.g. '
                                           '"diagnosis.stage_group"; what a request names.')
    table = serializers.CharField(help_text="The release table holding it.")
    column = serializers.CharField(help_text="Its column in that table.")
    label_en = serializers.CharField()
    label_zh = serializers.CharField()
    type = serializers.ChoiceField(
        choices=["string", "int", "float", "bool", "date_days", "category"],
        help_text="date_days: whole days from the patient's first diagnosis.")
    unit = serializers.CharField(allow_blank=True)
    transformation = serializers.CharField(allow_blank=True,
                                           help_text="What is done to it in a release.")
    requestable = serializers.SerializerMethodField(
        help_text="Whether a request may ask for it (direct identifiers may not).")
    values = serializers.SerializerMethodField(help_text="The coded values, with labels; "
                                                         "empty for free values.")

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        # "class" is a Python keyword: declared here rather than as an attribute.
        fields["class"] = serializers.ChoiceField(choices=list(catalog.CLASSES),
                                                  source="klass")
        return fields

    def get_requestable(self, variable: catalog.Variable) -> bool:
        return variable.klass != catalog.DIRECT

    @extend_schema_field(VariableValueOutput(many=True))
    def get_values(self, variable: catalog.Variable) -> list[dict[str, str]]:
        return [{"code": code, "label_en": en, "label_zh": zh}
                for code, (en, zh) in variable.value_labels().items()]


# -- data requests ------------------------------------------------------------------------------


@extend_schema_serializer(component_name="Criteria")
class CriteriaSerializer(StrictInput):
    """Cohort criteria (research/criteria.py); every key is optional, none means every
    consenting patient of the asked sites."""

    cancer = serializers.ListField(
        child=TextField(max_length=L.CRITERIA_CODE_MAX_LENGTH), max_length=L.CRITERIA_LIST_MAX,
        required=False, help_text="ICD-10 codes or their prefixes (C34, C50.9).")
    diagnosis_year_from = serializers.IntegerField(
        min_value=L.DIAGNOSIS_YEAR_MIN, max_value=L.DIAGNOSIS_YEAR_MAX, required=False,
        allow_null=True)
    diagnosis_year_to = serializers.IntegerField(
        min_value=L.DIAGNOSIS_YEAR_MIN, max_value=L.DIAGNOSIS_YEAR_MAX, required=False,
        allow_null=True)
    stage_groups = serializers.ListField(
        child=TextField(max_length=L.CRITERIA_CODE_MAX_LENGTH), max_length=L.CRITERIA_LIST_MAX,
        required=False, help_text="Stage groups of the same diagnosis (III, IV).")
    chemotherapy = serializers.BooleanField(
        required=False, help_text="At least one treatment line.")

    def to_representation(self, instance: dict) -> dict:
        # As stored: the keys given, none empty.
        return {k: v for k, v in super().to_representation(instance).items() if v is not None}


@extend_schema_serializer(component_name="DataRequestInput")
class RequestInput(StrictInput):
    """What a data request asks: the fields of research.services.requests.REQUEST_FIELDS."""

    title = TextField(max_length=L.TITLE_MAX_LENGTH)
    question = TextField(max_length=L.QUESTION_MAX_LENGTH)
    protocol_summary = TextField(max_length=L.PROTOCOL_MAX_LENGTH, allow_blank=True,
                                 required=False)
    purpose = serializers.ChoiceField(choices=Purpose.choices)
    access_days = serializers.IntegerField(
        min_value=L.ACCESS_DAYS_MIN, max_value=L.ACCESS_DAYS_MAX,
        help_text="How long the approved team may download, in days from the decision.")
    criteria = CriteriaSerializer(required=False)
    variables = serializers.ListField(
        child=TextField(), required=False,
        help_text="Names from the variable catalog (GET catalog/variables/); direct "
                  "identifiers are refused by name.")
    site_codes = serializers.ListField(child=TextField(max_length=SITE_CODE_MAX_LENGTH),
                                       required=False, help_text="The sites asked.")
    team = serializers.ListField(child=TextField(max_length=USERNAME_MAX_LENGTH),
                                 required=False,
                                 help_text="User names of the study's team (they may download "
                                           "its releases).")


@extend_schema_serializer(component_name="DataRequestSummary")
class RequestSummaryOutput(serializers.Serializer):
    id = serializers.IntegerField()
    reference = serializers.CharField(help_text="DR-00042")
    title = serializers.CharField()
    status = serializers.ChoiceField(choices=DataRequest.Status.choices)
    revision = serializers.IntegerField(help_text="The submission under review (0 while never "
                                                  "submitted).")
    purpose = serializers.ChoiceField(choices=Purpose.choices)
    requester = serializers.CharField(source="requester.username")
    submitted_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


@extend_schema_serializer(component_name="Tally")
class TallyOutput(serializers.Serializer):
    approve = serializers.IntegerField()
    approve_conditions = serializers.IntegerField()
    revise = serializers.IntegerField()
    reject = serializers.IntegerField()
    cast = serializers.IntegerField()
    quorum = serializers.IntegerField(help_text="Votes needed for a decision.")
    majority_pct = serializers.IntegerField()
    quorate = serializers.BooleanField()
    outcome = serializers.ChoiceField(choices=VoteChoice.choices,
                                      help_text="The outcome the votes give.")


@extend_schema_serializer(component_name="Decision")
class DecisionOutput(serializers.Serializer):
    revision = serializers.IntegerField()
    outcome = serializers.ChoiceField(choices=VoteChoice.choices)
    conditions = serializers.CharField(allow_blank=True)
    chair = serializers.CharField(source="chair.username")
    decided_at = serializers.DateTimeField()
    tally = TallyOutput(help_text="The votes as counted.")
    approved_quasi_identifiers = serializers.ListField(child=serializers.CharField())
    k_anonymity = serializers.IntegerField()
    access_until = serializers.DateField(allow_null=True,
                                         help_text="The last day of access (approvals).")


@extend_schema_serializer(component_name="Participation")
class ParticipationOutput(serializers.Serializer):
    id = serializers.IntegerField()
    request = serializers.IntegerField(source="request_id")
    request_reference = serializers.CharField(source="request.reference")
    request_title = serializers.CharField(source="request.title")
    site = serializers.CharField(source="site.code")
    answer = serializers.ChoiceField(choices=SiteParticipation.Answer.choices)
    answered_by = serializers.CharField(source="answered_by.username", allow_null=True)
    answered_at = serializers.DateTimeField(allow_null=True)
    comment = serializers.CharField(allow_blank=True)


@extend_schema_serializer(component_name="Vote")
class VoteOutput(serializers.Serializer):
    id = serializers.IntegerField()
    revision = serializers.IntegerField()
    member = serializers.CharField(source="member.username")
    choice = serializers.ChoiceField(choices=VoteChoice.choices)
    comment = serializers.CharField(allow_blank=True)
    cast_at = serializers.DateTimeField()


@extend_schema_serializer(component_name="Recusal")
class RecusalOutput(serializers.Serializer):
    member = serializers.CharField(source="member.username")
    reason = serializers.ChoiceField(choices=Recusal.Reason.choices)
    statement = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()


# -- releases -----------------------------------------------------------------------------------


@extend_schema_serializer(component_name="ReleaseSummary")
class ReleaseSummaryOutput(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField(help_text="DR-00042-R1")
    request = serializers.IntegerField(source="request_id")
    number = serializers.IntegerField()
    status = serializers.ChoiceField(choices=Release.Status.choices)
    progress = serializers.IntegerField(help_text="Per cent built.")
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    expires_at = serializers.DateTimeField(help_text="When access ends (files deleted).")


@extend_schema_serializer(component_name="ReleaseFile")
class ReleaseFileOutput(serializers.Serializer):
    name = serializers.CharField()
    bytes = serializers.IntegerField()
    sha256 = serializers.CharField()
    rows = serializers.IntegerField(allow_null=True, help_text="Rows of a table's file.")
    url = serializers.SerializerMethodField(help_text="Where to download it (recorded).")

    @extend_schema_field(OpenApiTypes.URI)
    def get_url(self, file) -> str:
        path = reverse("api:release_file", kwargs={"pk": file.release_id, "name": file.name})
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request is not None else path


@extend_schema_serializer(component_name="Release")
class ReleaseDetailOutput(ReleaseSummaryOutput):
    progress_note = serializers.CharField(allow_blank=True)
    snapshot_at = serializers.DateTimeField(help_text="The registry as it stood then.")
    started_at = serializers.DateTimeField(allow_null=True)
    patients = serializers.IntegerField()
    manifest = serializers.DictField(help_text="Every file's size and SHA-256, and each "
                                               "table's rows (manifest.json).")
    k_report = serializers.DictField(help_text="The k-anonymity report (k_anonymity.json).")
    files = ReleaseFileOutput(many=True, source="files.all")


# -- a request in full --------------------------------------------------------------------------


@extend_schema_serializer(component_name="DataRequest")
class RequestDetailOutput(serializers.Serializer):
    """A request as its caller may see it (research.selectors.api.RequestDetail)."""

    id = serializers.IntegerField(source="request.pk")
    reference = serializers.CharField(source="request.reference")
    title = serializers.CharField(source="request.title")
    status = serializers.ChoiceField(source="request.status",
                                     choices=DataRequest.Status.choices)
    revision = serializers.IntegerField(source="request.revision")
    purpose = serializers.ChoiceField(source="request.purpose", choices=Purpose.choices)
    requester = serializers.CharField(source="request.requester.username")
    organisation = serializers.CharField(
        source="request.organisation.name", allow_null=True,
        help_text="The requester's organisation at the last submission.")
    question = serializers.CharField(source="request.question")
    protocol_summary = serializers.CharField(source="request.protocol_summary",
                                             allow_blank=True)
    access_days = serializers.IntegerField(source="request.access_days")
    criteria = CriteriaSerializer(source="request.criteria")
    variables = serializers.ListField(source="request.variables", child=serializers.CharField())
    site_codes = serializers.ListField(child=serializers.CharField())
    team = serializers.ListField(child=serializers.CharField())
    submitted_at = serializers.DateTimeField(source="request.submitted_at", allow_null=True)
    created_at = serializers.DateTimeField(source="request.created_at")
    updated_at = serializers.DateTimeField(source="request.updated_at")
    decision = DecisionOutput(allow_null=True, help_text="The latest decision, if any.")
    participations = ParticipationOutput(many=True,
                                         help_text="Each asked site's answer (after approval).")
    releases = ReleaseSummaryOutput(many=True, help_text="The releases the caller may see.")
    votes = VoteOutput(many=True, allow_null=True,
                       help_text="Every revision's votes: the committee's only (null for "
                                 "others).")
    recusals = RecusalOutput(many=True, allow_null=True,
                             help_text="The committee's only (null for others).")


@extend_schema_serializer(component_name="Feasibility")
class FeasibilityOutput(serializers.Serializer):
    count = serializers.IntegerField(
        allow_null=True,
        help_text=f"The cohort's size rounded to {ROUND_TO}; null under {MIN_CELL}.")
    text = serializers.CharField(help_text=f'As shown to people: "< {MIN_CELL}" or "1,235".')
