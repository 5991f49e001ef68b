"""The committee's endpoints under /api/v1/ (docs/api.md, "Data requests and releases").

Each view names its scope (`requests` for requests, votes, decisions and site answers;
`releases` for releases and their files), finds the object through the visibility selectors of
research/ (an object the caller may not see is a 404), validates its input, calls one service
and answers. The services refuse what the caller's role may not do (NotPermitted, a 403) and
what the rules forbid (ValidationFailed, a 400); the API's exception handler writes the error
body, so no view catches anything.
"""

from __future__ import annotations

from django.db.models import QuerySet
from django.http import FileResponse
from django.urls import reverse
from django.utils.translation import gettext as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_serializer,
)
from rest_framework import serializers
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import Serializer
from rest_framework.views import APIView

from registry.api.pagination import ApiPagination
from registry.api.permissions import HasScope, request_scopes
from registry.api.schema import error_responses
from registry.api.scopes import Scope
from research import catalog
from research import limits as L
from research.api.serializers import (
    DecisionOutput,
    FeasibilityOutput,
    ParticipationOutput,
    RecusalOutput,
    ReleaseDetailOutput,
    ReleaseSummaryOutput,
    RequestDetailOutput,
    RequestInput,
    RequestSummaryOutput,
    StrictInput,
    TextField,
    VariableOutput,
    VoteOutput,
)
from research.disclosure import MIN_CELL, ROUND_TO
from research.models import Download, SiteParticipation, VoteChoice
from research.selectors.api import (
    access_participation,
    participations_listed,
    releases_listed,
    request_detail,
    request_releases,
    request_votes,
    requests_listed,
)
from research.selectors.cohort import request_feasibility
from research.selectors.requests import access_release, access_request
from research.services.committee import (
    decision_record,
    participation_answer,
    recusal_declare,
    vote_cast,
)
from research.services.releases import release_download, release_request
from research.services.requests import request_create, request_submit, request_update

ID = OpenApiParameter("id", OpenApiTypes.INT, OpenApiParameter.PATH)


class HasAnyScope(BasePermission):
    """For the few endpoints any of several scopes opens: `required_scope` is a tuple of
    scopes, one of which the request must hold (registry.api.permissions.HasScope judges it
    the same way: a token's scopes that its user's roles still allow, or a session's roles)."""

    def has_permission(self, request: Request, view: APIView) -> bool:
        if not request.user or not request.user.is_authenticated:
            return False  # 401 with the bearer challenge
        needed = tuple(view.required_scope)
        if request_scopes(request) & set(needed):
            return True
        self.message = _("This needs one of the scopes %(scopes)s.") % {
            "scopes": ", ".join(needed)}
        return False


class Paginated:
    """A list endpoint answering page by page (registry/api/pagination.py)."""

    pagination_class = ApiPagination

    def page(self, request: Request, queryset: QuerySet, output: type[Serializer]) -> Response:
        paginator = self.pagination_class()
        rows = paginator.paginate_queryset(queryset, request, view=self)
        return paginator.get_paginated_response(
            output(rows, many=True, context={"request": request}).data)


def _detail(request: Request, data_request) -> dict:
    return RequestDetailOutput(request_detail(request.user, data_request),
                               context={"request": request}).data


# -- the variable catalog -----------------------------------------------------------------------


class VariableCatalogApi(APIView):
    """Every variable a release can contain: what a request names."""

    permission_classes = [HasAnyScope]
    required_scope = (Scope.REQUESTS, Scope.RELEASES)

    @extend_schema(operation_id="catalog_variables", tags=["catalog"],
                   description="The variable catalog, whole (not paged), in the catalogue's "
                               "order. Needs the scope `requests` or `releases`.",
                   responses={200: VariableOutput(many=True), **error_responses(401, 403)})
    def get(self, request: Request) -> Response:
        return Response(VariableOutput(catalog.variables(), many=True).data)


# -- data requests ------------------------------------------------------------------------------


class RequestListApi(Paginated, APIView):
    permission_classes = [HasScope]
    required_scope = Scope.REQUESTS

    @extend_schema(operation_id="requests_list", tags=["data requests"],
                   description="The requests the caller may see: their own and their team's "
                               "(drafts included), every submitted one for the committee, the "
                               "approved ones asking a site for its PI.",
                   responses={200: RequestSummaryOutput(many=True),
                              **error_responses(401, 403, 404)})
    def get(self, request: Request) -> Response:
        return self.page(request, requests_listed(request.user), RequestSummaryOutput)

    @extend_schema(operation_id="requests_create", tags=["data requests"],
                   description="Draft a request (investigators). Unknown fields are refused; "
                               "every problem is reported at once and nothing is saved.",
                   request=RequestInput,
                   responses={201: RequestDetailOutput,
                              **error_responses(400, 401, 403, 415)})
    def post(self, request: Request) -> Response:
        data = RequestInput(data=request.data)
        data.is_valid(raise_exception=True)
        created = request_create(acting_user=request.user, **data.validated_data)
        return Response(_detail(request, created), status=201, headers={
            "Location": reverse("api:request_detail", kwargs={"pk": created.pk})})


class RequestDetailApi(APIView):
    permission_classes = [HasScope]
    required_scope = Scope.REQUESTS

    @extend_schema(operation_id="requests_retrieve", tags=["data requests"], parameters=[ID],
                   description="Everything asked, the status and revision, the latest "
                               "decision, the sites' answers and the releases; the votes and "
                               "recusals for the committee.",
                   responses={200: RequestDetailOutput, **error_responses(401, 403, 404)})
    def get(self, request: Request, pk: int) -> Response:
        return Response(_detail(request, access_request(request.user, pk)))

    @extend_schema(operation_id="requests_update", tags=["data requests"], parameters=[ID],
                   description="Change a draft, or a request sent back for revision (its "
                               "requester). Fields not given keep their value; `criteria`, "
                               "when given, replaces the criteria whole.",
                   request=RequestInput(partial=True),
                   responses={200: RequestDetailOutput,
                              **error_responses(400, 401, 403, 404, 415)})
    def patch(self, request: Request, pk: int) -> Response:
        data_request = access_request(request.user, pk)
        data = RequestInput(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        updated = request_update(request=data_request, acting_user=request.user,
                                 **data.validated_data)
        return Response(_detail(request, updated))


class RequestSubmitApi(APIView):
    permission_classes = [HasScope]
    required_scope = Scope.REQUESTS

    @extend_schema(operation_id="requests_submit", tags=["data requests"], parameters=[ID],
                   description="Send the request (a new revision) to the committee (its "
                               "requester). Refused while it names no variable or no site, or "
                               "its cohort is empty.",
                   request=None,
                   responses={200: RequestDetailOutput, **error_responses(400, 401, 403, 404)})
    def post(self, request: Request, pk: int) -> Response:
        submitted = request_submit(request=access_request(request.user, pk),
                                   acting_user=request.user)
        return Response(_detail(request, submitted))


class RequestFeasibilityApi(APIView):
    permission_classes = [HasScope]
    required_scope = Scope.REQUESTS

    @extend_schema(operation_id="requests_feasibility", tags=["data requests"],
                   parameters=[ID], request=None,
                   description=f"The size of the request's cohort (its criteria, purpose "
                               f"and sites) as it may be disclosed: under {MIN_CELL} hidden, "
                               f"the rest rounded to {ROUND_TO}.",
                   responses={200: FeasibilityOutput, **error_responses(401, 403, 404)})
    def post(self, request: Request, pk: int) -> Response:
        disclosed = request_feasibility(access_request(request.user, pk))
        return Response(FeasibilityOutput({"count": disclosed.value,
                                           "text": disclosed.text}).data)


# -- the committee ------------------------------------------------------------------------------


class RequestVotesApi(Paginated, APIView):
    permission_classes = [HasScope]
    required_scope = Scope.REQUESTS

    @extend_schema_serializer(component_name="VoteCast")
    class Input(StrictInput):
        choice = serializers.ChoiceField(choices=VoteChoice.choices)
        comment = TextField(max_length=L.COMMENT_MAX_LENGTH, allow_blank=True, required=False,
                            help_text="Required unless the vote is approve: the conditions, "
                                      "what to revise, or why not.")

    @extend_schema(operation_id="requests_votes_list", tags=["committee"], parameters=[ID],
                   description="Every revision's votes (committee members).",
                   responses={200: VoteOutput(many=True), **error_responses(401, 403, 404)})
    def get(self, request: Request, pk: int) -> Response:
        return self.page(request, request_votes(request.user, access_request(request.user, pk)),
                         VoteOutput)

    @extend_schema(operation_id="requests_votes_create", tags=["committee"], parameters=[ID],
                   description="Vote on the revision under review (a committee member, once, "
                               "not recused).",
                   request=Input,
                   responses={201: VoteOutput, **error_responses(400, 401, 403, 404, 415)})
    def post(self, request: Request, pk: int) -> Response:
        data_request = access_request(request.user, pk)
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        vote = vote_cast(request=data_request, acting_user=request.user, **data.validated_data)
        return Response(VoteOutput(vote).data, status=201)


class RequestRecusalApi(APIView):
    permission_classes = [HasScope]
    required_scope = Scope.REQUESTS

    @extend_schema_serializer(component_name="RecusalDeclare")
    class Input(StrictInput):
        statement = TextField(max_length=L.COMMENT_MAX_LENGTH, allow_blank=True,
                              required=False, help_text="The conflict, in a sentence.")

    @extend_schema(operation_id="requests_recusal", tags=["committee"], parameters=[ID],
                   description="Declare a conflict of interest (a committee member): a vote "
                               "already cast on the current revision is withdrawn, and no "
                               "other can be cast.",
                   request=Input,
                   responses={201: RecusalOutput, **error_responses(400, 401, 403, 404, 415)})
    def post(self, request: Request, pk: int) -> Response:
        data_request = access_request(request.user, pk)
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        recusal = recusal_declare(request=data_request, acting_user=request.user,
                                  **data.validated_data)
        return Response(RecusalOutput(recusal).data, status=201)


class RequestDecisionApi(APIView):
    permission_classes = [HasScope]
    required_scope = Scope.REQUESTS

    @extend_schema_serializer(component_name="DecisionRecord")
    class Input(StrictInput):
        conditions = TextField(max_length=L.COMMENT_MAX_LENGTH, allow_blank=True,
                               required=False,
                               help_text="Required when the votes approve with conditions.")
        approved_quasi_identifiers = serializers.ListField(
            child=TextField(), required=False,
            help_text="The requested quasi-identifiers the release may hold.")
        k_anonymity = serializers.IntegerField(
            required=False, allow_null=True,
            help_text="k of the release's k-anonymity (at least the registry's floor).")

    @extend_schema(operation_id="requests_decision", tags=["committee"], parameters=[ID],
                   description="Record the committee's outcome for the revision under review "
                               "(the chair, once a quorum has voted). The outcome is the "
                               "votes'; an approval asks each site to opt in.",
                   request=Input,
                   responses={201: DecisionOutput, **error_responses(400, 401, 403, 404, 415)})
    def post(self, request: Request, pk: int) -> Response:
        data_request = access_request(request.user, pk)
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        decision = decision_record(request=data_request, acting_user=request.user,
                                   **data.validated_data)
        return Response(DecisionOutput(decision).data, status=201)


# -- sites' answers -----------------------------------------------------------------------------


class ParticipationListApi(Paginated, APIView):
    permission_classes = [HasScope]
    required_scope = Scope.REQUESTS

    @extend_schema(operation_id="participations_list", tags=["site participation"],
                   description="The questions to the caller's sites (a site PI): will the site "
                               "take part in an approved request? Empty for other roles.",
                   responses={200: ParticipationOutput(many=True),
                              **error_responses(401, 403, 404)})
    def get(self, request: Request) -> Response:
        return self.page(request, participations_listed(request.user), ParticipationOutput)


class ParticipationAnswerApi(APIView):
    permission_classes = [HasScope]
    required_scope = Scope.REQUESTS

    @extend_schema_serializer(component_name="ParticipationAnswer")
    class Input(StrictInput):
        answer = serializers.ChoiceField(choices=[
            (a.value, a.label) for a in (SiteParticipation.Answer.OPTED_IN,
                                         SiteParticipation.Answer.DECLINED)])
        comment = TextField(max_length=L.COMMENT_MAX_LENGTH, allow_blank=True, required=False)

    @extend_schema(operation_id="participations_answer", tags=["site participation"],
                   parameters=[ID],
                   description="Opt the site in or out (its site PI); the answer may change "
                               "until the access period ends.",
                   request=Input,
                   responses={200: ParticipationOutput,
                              **error_responses(400, 401, 403, 404, 415)})
    def post(self, request: Request, pk: int) -> Response:
        participation = access_participation(request.user, pk)
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        answered = participation_answer(participation=participation, acting_user=request.user,
                                        **data.validated_data)
        return Response(ParticipationOutput(answered).data)


# -- releases -----------------------------------------------------------------------------------


class RequestReleasesApi(Paginated, APIView):
    permission_classes = [HasScope]
    required_scope = Scope.RELEASES

    @extend_schema(operation_id="requests_releases_list", tags=["releases"], parameters=[ID],
                   description="The request's releases the caller may see.",
                   responses={200: ReleaseSummaryOutput(many=True),
                              **error_responses(401, 403, 404)})
    def get(self, request: Request, pk: int) -> Response:
        return self.page(request, request_releases(request.user,
                                                   access_request(request.user, pk)),
                         ReleaseSummaryOutput)

    @extend_schema(operation_id="requests_releases_create", tags=["releases"],
                   parameters=[ID], request=None,
                   description="Ask for a release of an approved request (its team). It is "
                               "built in the background: poll the release until its status is "
                               "ready.",
                   responses={202: ReleaseDetailOutput, **error_responses(400, 401, 403, 404)})
    def post(self, request: Request, pk: int) -> Response:
        release = release_request(request=access_request(request.user, pk),
                                  acting_user=request.user)
        return Response(ReleaseDetailOutput(release, context={"request": request}).data,
                        status=202, headers={
                            "Location": reverse("api:release_detail", kwargs={"pk": release.pk})})


class ReleaseListApi(Paginated, APIView):
    permission_classes = [HasScope]
    required_scope = Scope.RELEASES

    @extend_schema(operation_id="releases_list", tags=["releases"],
                   description="The releases the caller may see: their team's.",
                   responses={200: ReleaseSummaryOutput(many=True),
                              **error_responses(401, 403, 404)})
    def get(self, request: Request) -> Response:
        return self.page(request, releases_listed(request.user), ReleaseSummaryOutput)


class ReleaseDetailApi(APIView):
    permission_classes = [HasScope]
    required_scope = Scope.RELEASES

    @extend_schema(operation_id="releases_retrieve", tags=["releases"], parameters=[ID],
                   description="The release's status and progress, its manifest, k-anonymity "
                               "report and files.",
                   responses={200: ReleaseDetailOutput, **error_responses(401, 403, 404)})
    def get(self, request: Request, pk: int) -> Response:
        return Response(ReleaseDetailOutput(access_release(request.user, pk),
                                            context={"request": request}).data)


class ReleaseFileApi(APIView):
    permission_classes = [HasScope]
    required_scope = Scope.RELEASES
    # Every GET is a recorded download; a HEAD would record one without a file leaving.
    http_method_names = ["get", "options"]

    def perform_content_negotiation(self, request: Request, force: bool = False):
        # A file answers whatever the Accept header asks (errors are JSON regardless).
        return super().perform_content_negotiation(request, force=True)

    @extend_schema(
        operation_id="releases_file", tags=["releases"],
        parameters=[ID, OpenApiParameter("name", OpenApiTypes.STR, OpenApiParameter.PATH,
                                         description="A file name of the release's files.")],
        description="One file of the release (its team, until access ends); every download "
                    "is recorded. Compare its SHA-256 with the release's files.",
        responses={(200, "application/octet-stream"): OpenApiResponse(
            response=OpenApiTypes.BINARY, description="The file, as an attachment."),
            **error_responses(400, 401, 403, 404)})
    def get(self, request: Request, pk: int, name: str) -> FileResponse:
        path, file = release_download(release=access_release(request.user, pk), name=name,
                                      acting_user=request.user, channel=Download.Channel.API)
        return FileResponse(path.open("rb"), as_attachment=True, filename=file.name)
