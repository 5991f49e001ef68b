"""The clerk and monitor pages: work queue, patient list, chart, record forms, workflow, audit.

Each view validates input, calls one selector or service, and renders. Domain errors
(RegistryError) are shown at the fields they name; another site's row is a 404.
"""

from __future__ import annotations

import csv
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from registry import access, forms, limits
from registry.csvsafe import spreadsheet_safe
from registry.errors import RegistryError, StaleEdit
from registry.models import DataQuery, Department, RecordStatus, Role
from registry.selectors.patients import patient_chart, patient_search, work_queue
from registry.services import clinical, workflow
from registry.views.kinds import KINDS

PAGE_SIZE = 50


def _errors_to_form(form, error: RegistryError) -> None:
    for field, messages_ in error.errors.items():
        target = field if field in form.fields else None
        for message in messages_:
            form.add_error(target, message)


def _record(request, registry_id: str, kind: str, pk: int):
    """The record, if it belongs to this patient and the user may see it; else 404."""
    patient = access.access_patient_by_registry_id(request.user, registry_id)
    if kind == "patient":
        return patient, patient
    if kind not in KINDS:
        raise Http404("Unknown record kind.")
    model = KINDS[kind].model
    return patient, get_object_or_404(access.scope(model.objects.all(), request.user),
                                      pk=pk, patient=patient)


@login_required
def home(request: HttpRequest) -> HttpResponse:
    roles = access.user_roles(request.user)
    context = {
        "memberships": request.user.memberships.filter(is_active=True).select_related("site")
        .order_by("role", "site__code"),
        "is_admin": access.is_registry_admin(request.user),
        "sites": access.sites_visible(request.user),
        "patient_count": access.patients_visible(request.user).count(),
    }
    if roles & {Role.CLERK, Role.MONITOR, Role.ADMIN}:
        context["queue"] = work_queue(request.user)
    return render(request, "registry/home.html", context)


@login_required
def patient_list(request: HttpRequest) -> HttpResponse:
    sites = access.sites_visible(request.user)
    departments = Department.objects.filter(site__in=sites).select_related("site")
    filters = forms.PatientFilterForm(request.GET, statuses=RecordStatus.choices,
                                      departments=departments, sites=sites)
    params, dropped = filters.filters()
    if dropped:
        messages.warning(request, _("These filters were not valid and were ignored: %(fields)s.")
                         % {"fields": ", ".join(dropped)})
    patients = patient_search(request.user, **params).prefetch_related(
        "diagnoses__cancer")
    page = Paginator(patients, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "registry/patient_list.html", {
        "page": page, "params": params, "statuses": RecordStatus.choices,
        "sites": sites, "departments": departments, "cancers": forms.CANCER_FILTERS,
        "search_max_length": limits.SEARCH_MAX_LENGTH,
        "query_string": urlencode({k: v for k, v in params.items() if v}),
    })


@login_required
def patient_new(request: HttpRequest) -> HttpResponse:
    sites = access.scope(access.sites_visible(request.user), request.user,
                         roles=workflow.DATA_ENTRY_ROLES)
    form = forms.PatientForm(request.POST or None)
    form.fields["site"].choices = [(s.code, f"{s.code} {s.name}") for s in sites]
    departments = Department.objects.filter(site__in=sites).select_related("site")
    form.fields["department"].choices = [("", "—")] + [
        (str(d.pk), f"{d.site.code} / {d.name}") for d in departments]
    if request.method == "POST" and form.is_valid():
        d = form.cleaned_data
        site = access.access_site_for_role(request.user, d["site"], workflow.DATA_ENTRY_ROLES)
        department = departments.filter(pk=d["department"]).first() if d["department"] else None
        try:
            patient = clinical.patient_register(
                site=site, patient_no=d["patient_no"], sex=d["sex"], birth_year=d["birth_year"],
                department=department, consent_scope=d["consent_scope"],
                consent_date=d["consent_date"], acting_user=request.user)
        except RegistryError as error:
            _errors_to_form(form, error)
        else:
            messages.success(request, _("Patient registered."))
            return redirect("patient_chart", registry_id=patient.registry_id)
    return render(request, "registry/record_form.html",
                  {"form": form, "title": _("Register a patient")})


@login_required
def chart(request: HttpRequest, registry_id: str) -> HttpResponse:
    patient = patient_chart(request.user, registry_id)
    roles = access.user_roles(request.user)
    return render(request, "registry/patient_chart.html", {
        "patient": patient, "kinds": KINDS,
        "is_monitor": bool(roles & {Role.MONITOR, Role.ADMIN}),
        "open_queries": [q for q in patient.queries.all() if q.status != DataQuery.Status.CLOSED],
    })


@login_required
def record_new(request: HttpRequest, registry_id: str, kind: str) -> HttpResponse:
    patient = access.access_patient_by_registry_id(request.user, registry_id)
    spec = KINDS.get(kind) or _raise_404()
    form = spec.form(request.POST or None)
    spec.prepare(form, patient)
    if request.method == "POST" and form.is_valid():
        try:
            spec.save(patient, form.cleaned_data, None, None, "", request.user)
        except RegistryError as error:
            _errors_to_form(form, error)
        else:
            messages.success(request, _("Saved."))
            return redirect("patient_chart", registry_id=patient.registry_id)
    return render(request, "registry/record_form.html", {
        "form": form, "patient": patient, "title": spec.label, "kind": kind})


@login_required
def record_edit(request: HttpRequest, registry_id: str, kind: str, pk: int) -> HttpResponse:
    patient, record = _record(request, registry_id, kind, pk)
    if kind == "patient":
        spec_form = forms.PatientEditForm
        initial = {"sex": record.sex, "birth_year": record.birth_year,
                   "department": str(record.department_id or ""),
                   "consent_scope": record.consent_scope, "consent_date": record.consent_date}
    else:
        spec = KINDS[kind]
        spec_form = spec.form
        initial = spec.initial(record)
    initial["version"] = record.version
    form = spec_form(request.POST or None, initial=initial)
    form.fields["version"].required = True  # an edit without it could overwrite another's
    if kind == "patient":
        form.fields["department"].choices = [("", "—")] + [
            (str(d.pk), d.name) for d in record.site.departments.all()]
    else:
        spec.prepare(form, patient)
    changes = []
    if request.method == "POST" and form.is_valid():
        d = form.cleaned_data
        try:
            if kind == "patient":
                department = record.site.departments.filter(pk=d["department"]).first() \
                    if d["department"] else None
                clinical.patient_update(
                    patient=record, sex=d["sex"], birth_year=d["birth_year"],
                    department=department, consent_scope=d["consent_scope"],
                    consent_date=d["consent_date"], expected_version=d["version"],
                    change_reason=d["change_reason"], acting_user=request.user)
            else:
                spec.save(patient, d, record, d["version"], d["change_reason"], request.user)
        except StaleEdit as error:
            # Your input stays on the form; the changes made meanwhile are listed above it.
            changes = getattr(error, "changes", [])
            _errors_to_form(form, error)
        except RegistryError as error:
            _errors_to_form(form, error)
        else:
            messages.success(request, _("Saved."))
            return redirect("patient_chart", registry_id=patient.registry_id)
    return render(request, "registry/record_form.html", {
        "form": form, "patient": patient, "record": record, "kind": kind, "changes": changes,
        "title": _("Edit"), "submitted": record.status != RecordStatus.DRAFT,
        "locked": record.status == RecordStatus.LOCKED})


def _raise_404():
    raise Http404("Unknown record kind.")


@login_required
@require_POST
def patient_submit(request: HttpRequest, registry_id: str) -> HttpResponse:
    patient = access.access_patient_by_registry_id(request.user, registry_id)
    try:
        count = workflow.patient_submit(patient, acting_user=request.user)
    except RegistryError as error:
        messages.error(request, error.summary())
    else:
        messages.success(request, _("%(n)d records submitted.") % {"n": count})
    return redirect("patient_chart", registry_id=registry_id)


@login_required
def record_sign(request: HttpRequest, registry_id: str, kind: str, pk: int,
                action: str) -> HttpResponse:
    """Verify or lock (password re-entered as an e-signature), or unlock (with a reason)."""
    if action not in ("verify", "lock", "unlock"):
        raise Http404("Unknown action.")
    patient, record = _record(request, registry_id, kind, pk)
    form = (forms.ReasonForm if action == "unlock" else forms.SignatureForm)(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            if action == "verify":
                workflow.record_verify(record, acting_user=request.user,
                                       password=form.cleaned_data["password"])
            elif action == "lock":
                workflow.record_lock(record, acting_user=request.user,
                                     password=form.cleaned_data["password"])
            else:
                workflow.record_unlock(record, acting_user=request.user,
                                       reason=form.cleaned_data["reason"])
        except RegistryError as error:
            _errors_to_form(form, error)
        else:
            messages.success(request, _("Done."))
            return redirect("patient_chart", registry_id=registry_id)
    titles = {"verify": _("Verify record"), "lock": _("Lock record"),
              "unlock": _("Unlock record")}
    return render(request, "registry/record_form.html", {
        "form": form, "patient": patient, "record": record, "title": titles[action]})


@login_required
def query_new(request: HttpRequest, registry_id: str, kind: str, pk: int) -> HttpResponse:
    patient, record = _record(request, registry_id, kind, pk)
    form = forms.QueryForm(request.POST or None, initial={"field": request.GET.get("field", "")})
    if request.method == "POST" and form.is_valid():
        try:
            workflow.query_open(record, field=form.cleaned_data["field"],
                                text=form.cleaned_data["text"], acting_user=request.user)
        except RegistryError as error:
            _errors_to_form(form, error)
        else:
            messages.success(request, _("Query opened."))
            return redirect("patient_chart", registry_id=registry_id)
    return render(request, "registry/record_form.html", {
        "form": form, "patient": patient, "record": record, "title": _("Open a query")})


@login_required
def query_act(request: HttpRequest, query_id: int, action: str) -> HttpResponse:
    if action not in ("answer", "close"):
        raise Http404("Unknown action.")
    query = get_object_or_404(access.queries_visible(request.user).select_related("patient"),
                              pk=query_id)
    form = forms.AnswerForm(request.POST or None) if action == "answer" else None
    if request.method == "POST" and (form is None or form.is_valid()):
        try:
            if action == "answer":
                workflow.query_answer(query, answer=form.cleaned_data["answer"],
                                      acting_user=request.user)
            else:
                workflow.query_close(query, acting_user=request.user)
        except RegistryError as error:
            if form is None:
                messages.error(request, error.summary())
            else:
                _errors_to_form(form, error)
        else:
            return redirect("patient_chart", registry_id=query.patient.registry_id)
    if form is None:
        return redirect("patient_chart", registry_id=query.patient.registry_id)
    return render(request, "registry/record_form.html", {
        "form": form, "patient": query.patient, "title": _("Answer the query"),
        "query": query})


AUDIT_COLUMNS = ["when", "who", "action", "field", "old", "new", "reason"]


def audit_rows(record) -> list[dict]:
    """The record's history as who / when / field / old -> new / reason."""
    rows = []
    previous = None
    fields = workflow.content_fields(type(record)) + [type(record)._meta.get_field("status")]
    for entry in record.history.order_by("history_date", "history_id").select_related(
            "history_user"):
        who = entry.history_user.username if entry.history_user else "system"
        action = {"+": _("created"), "~": _("changed"), "-": _("deleted")}[entry.history_type]
        changed = []
        for field in fields:
            new = getattr(entry, field.attname)
            old = getattr(previous, field.attname) if previous else None
            if previous is None or old != new:
                changed.append((field.name, "" if old is None else old, "" if new is None
                                else new))
        for name, old, new in changed or [("", "", "")]:
            rows.append({"when": entry.history_date, "who": who, "action": action,
                         "field": name, "old": old, "new": new,
                         "reason": entry.history_change_reason or ""})
        previous = entry
    return rows


@login_required
def record_audit(request: HttpRequest, registry_id: str, kind: str, pk: int) -> HttpResponse:
    patient, record = _record(request, registry_id, kind, pk)
    rows = audit_rows(record)
    if request.GET.get("format") == "csv":
        response = HttpResponse(content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = (
            f'attachment; filename="audit-{registry_id}-{kind}-{pk}.csv"')
        response.write("\ufeff")  # so spreadsheet programs read UTF-8
        writer = csv.DictWriter(response, fieldnames=AUDIT_COLUMNS)
        writer.writeheader()
        for row in rows:
            # Text that a spreadsheet would run as a formula is exported as text.
            writer.writerow({k: spreadsheet_safe(v) for k, v in row.items()})
        return response
    return render(request, "registry/audit.html", {
        "patient": patient, "record": record, "rows": rows, "kind": kind})


