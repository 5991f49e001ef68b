"""Uploading a site extract and following its import (the same pipeline as import_extract)."""

from __future__ import annotations

import csv
import logging

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_POST

from registry import access
from registry.csvsafe import spreadsheet_safe
from registry.errors import RegistryError
from registry.extracts import PROBLEM_COLUMNS, UPLOAD_SUFFIXES, upload_limit, upload_max_bytes
from registry.models import ImportBatch
from registry.models.imports import SOURCE_NAME_MAX_LENGTH
from registry.services.imports import IMPORT_ROLES, batch_resume, batch_upload
from registry.tasks import extract_import_task

ALLOWED = tuple(f".{suffix}" for suffix in UPLOAD_SUFFIXES)
# What a multipart form adds around the file (the other fields, boundaries, headers).
FORM_OVERHEAD_BYTES = 64 * 1024
logger = logging.getLogger(__name__)


class UploadForm(forms.Form):
    site = forms.ChoiceField(label=_("Site"))
    extract = forms.FileField(label=_("Extract (.zip of CSV/Excel files, or one file)"),
                              max_length=SOURCE_NAME_MAX_LENGTH)
    dry_run = forms.BooleanField(label=_("Check only (dry run)"), required=False)

    def clean_extract(self):
        upload = self.cleaned_data["extract"]
        if not upload.name.lower().endswith(ALLOWED):
            raise forms.ValidationError(_("Upload a .zip, .csv or .xlsx file."))
        limit = upload_limit(upload.name)
        if upload.size > limit:
            raise forms.ValidationError(
                _("The file is %(size)s bytes; at most %(limit)s are accepted.")
                % {"size": f"{upload.size:,}", "limit": f"{limit:,}"})
        return upload


def _queue(batch_id: int) -> None:
    """Queue a batch's import once the batch is committed. A broker that cannot be reached
    leaves it "received": import_stale_requeue_task queues it again later."""
    def send() -> None:
        try:
            extract_import_task.delay(batch_id)
        except Exception:  # the broker's own errors vary by transport
            logger.exception("import %s: could not queue it; it will be queued again", batch_id)

    transaction.on_commit(send)


def _body_too_large(request: HttpRequest) -> str:
    """The error for a request body larger than any upload may be, from its Content-Length."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return _("The request's length is not a number.")
    limit = upload_max_bytes()
    if length > limit + FORM_OVERHEAD_BYTES:
        return _("The upload is %(size)s bytes; at most %(limit)s are accepted.") % {
            "size": f"{length:,}", "limit": f"{limit:,}"}
    return ""


def _batches(user):
    return access.imports_visible(user, roles=IMPORT_ROLES).select_related("site",
                                                                          "uploaded_by")


@login_required
def import_list(request: HttpRequest) -> HttpResponse:
    sites = access.scope(access.sites_visible(request.user), request.user, roles=IMPORT_ROLES)
    too_large = request.method == "POST" and _body_too_large(request)
    if too_large:  # refused before the body is read (nothing streamed to a temporary file)
        form = UploadForm()
        messages.error(request, too_large)
    else:
        form = UploadForm(request.POST or None, request.FILES or None)
    form.fields["site"].choices = [(s.code, f"{s.code} {s.name}") for s in sites]
    if request.method == "POST" and not too_large and form.is_valid():
        site = access.access_site_for_role(request.user, form.cleaned_data["site"], IMPORT_ROLES)
        try:
            batch = batch_upload(site=site, upload=form.cleaned_data["extract"],
                                 acting_user=request.user, dry_run=form.cleaned_data["dry_run"])
        except RegistryError as error:
            form.add_error(None, error.summary())
        else:
            if batch.status == ImportBatch.Status.RECEIVED:
                _queue(batch.pk)
            return redirect("import_detail", batch_id=batch.pk)
    return render(request, "registry/imports.html", {
        "form": form, "batches": _batches(request.user)[:50]})


@login_required
def import_detail(request: HttpRequest, batch_id: int) -> HttpResponse:
    batch = get_object_or_404(_batches(request.user), pk=batch_id)
    if request.GET.get("format") == "json":
        return JsonResponse({"status": batch.status, "label": batch.get_status_display(),
                             "progress": batch.progress, "stage": batch.stage})
    if request.GET.get("format") == "csv":
        response = HttpResponse(content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="import-{batch.pk}-errors.csv"'
        response.write("\ufeff")
        writer = csv.DictWriter(response, PROBLEM_COLUMNS)
        writer.writeheader()
        for error in batch.errors:
            writer.writerow({k: spreadsheet_safe(v) for k, v in error.items()})
        return response
    return render(request, "registry/import_detail.html", {"batch": batch})


@login_required
@require_POST
def import_resume(request: HttpRequest, batch_id: int) -> HttpResponse:
    batch = get_object_or_404(_batches(request.user), pk=batch_id)
    try:
        batch_resume(batch=batch, acting_user=request.user)
    except RegistryError as error:
        messages.error(request, error.summary())
    else:
        _queue(batch.pk)
    return redirect("import_detail", batch_id=batch.pk)
