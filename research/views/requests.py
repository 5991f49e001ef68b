"""Data requests: the form (with the live feasibility count), the request's page, and each
step a role takes there: submit, vote, declare a conflict, decide, answer for a site.

Each step is a POST that redirects back to the request with a message; a refusal shows the
request page again with the reason (400, or 403 for a role that may not act). A request the
person may not see is a 404 (research.selectors.requests).
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from registry.errors import RegistryError, ValidationFailed
from research.criteria import criteria_clean
from research.forms import (
    AnswerForm,
    DecisionForm,
    FeasibilityForm,
    RecusalForm,
    RequestForm,
    VoteForm,
)
from research.models import DataRequest, Purpose
from research.selectors.cohort import feasibility_count, request_feasibility
from research.selectors.pages import (
    active_sites,
    quasi_identifier_choices,
    request_page,
    requestable_by_table,
)
from research.selectors.requests import access_request, may_request
from research.services import committee
from research.services import requests as services
from research.views.common import form_problems, refusal_status, show_errors


def _site_choices() -> list[tuple[str, str]]:
    return [(s.code, f"{s.code} {s.name}") for s in active_sites()]


def _require_requester(request: HttpRequest) -> None:
    if not may_request(request.user):
        raise PermissionDenied(_("Only investigators and partners make data requests."))


def _form_page(request: HttpRequest, form: RequestForm, data_request: DataRequest | None
               ) -> HttpResponse:
    chosen = set(form["variables"].value() or [])
    return render(request, "research/request_form.html", {
        "form": form, "data_request": data_request, "chosen_variables": chosen,
        "variable_tables": requestable_by_table(),
        "feasibility": request_feasibility(data_request) if data_request else None})


@login_required
def request_new(request: HttpRequest) -> HttpResponse:
    _require_requester(request)
    form = RequestForm(request.POST or None, site_choices=_site_choices())
    if request.method == "POST" and form.is_valid():
        try:
            data_request = services.request_create(acting_user=request.user,
                                                   **form.request_fields())
        except RegistryError as error:
            show_errors(request, form, error)
        else:
            messages.success(request, _("Draft %(ref)s saved. Submit it to the committee when "
                                        "it is complete.") % {"ref": data_request.reference})
            return redirect("research:request_detail", pk=data_request.pk)
    return _form_page(request, form, None)


@login_required
def request_edit(request: HttpRequest, pk: int) -> HttpResponse:
    data_request = access_request(request.user, pk)
    if data_request.requester_id != request.user.pk:
        raise PermissionDenied(_("Only the requester edits a request."))
    if data_request.status not in services.EDITABLE_STATUSES:
        messages.error(request, _("A request %(status)s cannot be edited.") % {
            "status": data_request.get_status_display().lower()})
        return redirect("research:request_detail", pk=data_request.pk)
    form = RequestForm(request.POST or None, initial=RequestForm.initial_of(data_request),
                       site_choices=_site_choices())
    if request.method == "POST" and form.is_valid():
        try:
            services.request_update(request=data_request, acting_user=request.user,
                                    **form.request_fields())
        except RegistryError as error:
            show_errors(request, form, error)
        else:
            messages.success(request, _("Saved."))
            return redirect("research:request_detail", pk=data_request.pk)
    return _form_page(request, form, data_request)


@login_required
@require_GET
def feasibility(request: HttpRequest) -> JsonResponse:
    """The cohort size of criteria being edited, as it may be shown ("< 11", "1,235")."""
    if not may_request(request.user):
        return JsonResponse({"error": _("Only investigators and partners ask for feasibility "
                                        "counts.")}, status=403)
    form = FeasibilityForm(request.GET, site_choices=_site_choices())
    if not form.is_valid():
        problems = form_problems(form)
        return JsonResponse({"error": " ".join(m for ms in problems.values() for m in ms),
                             "errors": problems}, status=400)
    try:
        criteria = criteria_clean(form.criteria_given())
    except ValidationFailed as error:
        return JsonResponse({"error": error.summary(), "errors": error.errors}, status=400)
    sites = active_sites().filter(code__in=form.cleaned_data["sites"])
    count = feasibility_count(criteria=criteria,
                              purpose=form.cleaned_data["purpose"] or Purpose.ACADEMIC,
                              site_ids=sites.values_list("pk", flat=True))
    return JsonResponse({"count": count.text})


def _detail(request: HttpRequest, data_request: DataRequest, bound: dict | None = None,
            status: int = 200) -> HttpResponse:
    page = request_page(request.user, data_request)
    bound = bound or {}
    answers = []
    for participation in page.to_answer:
        form = bound.get(("answer", participation.pk)) or AnswerForm(
            prefix=f"p{participation.pk}",
            initial={"answer": participation.answer, "comment": participation.comment})
        answers.append((participation, form))
    return render(request, "research/request_detail.html", {
        "page": page, "data_request": data_request,
        "vote_form": bound.get("vote") or VoteForm(),
        "recusal_form": bound.get("recusal") or RecusalForm(),
        "decision_form": bound.get("decision") or DecisionForm(
            quasi_identifiers=quasi_identifier_choices(data_request)),
        "answers": answers,
    }, status=status)


@login_required
def request_detail(request: HttpRequest, pk: int) -> HttpResponse:
    return _detail(request, access_request(request.user, pk))


def refused_on_request_page(request: HttpRequest, data_request: DataRequest,
                            error: RegistryError, key=None, form=None) -> HttpResponse:
    """The request page again, with the reason a step was refused."""
    show_errors(request, form, error)
    data_request.refresh_from_db()
    return _detail(request, data_request, {key: form} if key else None,
                   status=refusal_status(error))


@login_required
@require_POST
def request_submit(request: HttpRequest, pk: int) -> HttpResponse:
    data_request = access_request(request.user, pk)
    try:
        services.request_submit(request=data_request, acting_user=request.user)
    except RegistryError as error:
        return refused_on_request_page(request, data_request, error)
    messages.success(request, _("Submitted to the committee."))
    return redirect("research:request_detail", pk=data_request.pk)


@login_required
@require_POST
def vote(request: HttpRequest, pk: int) -> HttpResponse:
    data_request = access_request(request.user, pk)
    form = VoteForm(request.POST)
    if not form.is_valid():
        return _detail(request, data_request, {"vote": form}, status=400)
    try:
        committee.vote_cast(request=data_request, acting_user=request.user,
                            choice=form.cleaned_data["choice"],
                            comment=form.cleaned_data["comment"])
    except RegistryError as error:
        return refused_on_request_page(request, data_request, error, "vote", form)
    messages.success(request, _("Your vote is recorded."))
    return redirect("research:request_detail", pk=data_request.pk)


@login_required
@require_POST
def recusal(request: HttpRequest, pk: int) -> HttpResponse:
    data_request = access_request(request.user, pk)
    form = RecusalForm(request.POST)
    if not form.is_valid():
        return _detail(request, data_request, {"recusal": form}, status=400)
    try:
        committee.recusal_declare(request=data_request, acting_user=request.user,
                                  statement=form.cleaned_data["statement"])
    except RegistryError as error:
        return refused_on_request_page(request, data_request, error, "recusal", form)
    messages.success(request, _("Your conflict of interest is recorded; you no longer vote on "
                                "this request."))
    return redirect("research:request_detail", pk=data_request.pk)


@login_required
@require_POST
def decision(request: HttpRequest, pk: int) -> HttpResponse:
    data_request = access_request(request.user, pk)
    form = DecisionForm(request.POST,
                        quasi_identifiers=quasi_identifier_choices(data_request))
    if not form.is_valid():
        return _detail(request, data_request, {"decision": form}, status=400)
    try:
        made = committee.decision_record(
            request=data_request, acting_user=request.user,
            conditions=form.cleaned_data["conditions"],
            approved_quasi_identifiers=form.cleaned_data["approved_quasi_identifiers"],
            k_anonymity=form.cleaned_data["k_anonymity"])
    except RegistryError as error:
        return refused_on_request_page(request, data_request, error, "decision", form)
    messages.success(request, _("Decision recorded: %(outcome)s.") % {
        "outcome": made.get_outcome_display()})
    return redirect("research:request_detail", pk=data_request.pk)


@login_required
@require_POST
def answer(request: HttpRequest, pk: int, participation_id: int) -> HttpResponse:
    data_request = access_request(request.user, pk)
    participation = get_object_or_404(data_request.participations, pk=participation_id)
    form = AnswerForm(request.POST, prefix=f"p{participation.pk}")
    key = ("answer", participation.pk)
    if not form.is_valid():
        return _detail(request, data_request, {key: form}, status=400)
    try:
        committee.participation_answer(participation=participation, acting_user=request.user,
                                       answer=form.cleaned_data["answer"],
                                       comment=form.cleaned_data["comment"])
    except RegistryError as error:
        return refused_on_request_page(request, data_request, error, key, form)
    messages.success(request, _("%(site)s answered.") % {"site": participation.site.code})
    return redirect("research:request_detail", pk=data_request.pk)
