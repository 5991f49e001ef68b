"""Uploading a site extract and following its import (the same pipeline as import_extract)."""

from __future__ import annotations

import csv
import uuid

from django import forms
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.text import get_valid_filename
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_POST

from registry import access
from registry.csvsafe import spreadsheet_safe
from registry.errors import RegistryError
from registry.models import ImportBatch
from registry.services.imports import IMPORT_ROLES, batch_create
from registry.tasks import extract_import_task

ALLOWED = (".zip", ".csv", ".xlsx")


class UploadForm(forms.Form):
    site = forms.ChoiceField(label=_("Site"))
    extract = forms.FileField(label=_("Extract (.zip of CSV/Excel files, or one file)"))
    dry_run = forms.BooleanField(label=_("Check only (dry run)"), required=False)

    def clean_extract(self):
        upload = self.cleaned_data["extract"]
        if not upload.name.lower().endswith(ALLOWED):
            raise forms.ValidationError(_("Upload a .zip, .csv or .xlsx file."))
        return upload


def _batches(user):
    return access.imports_visible(user, roles=IMPORT_ROLES).select_related("site",
                                                                          "uploaded_by")


@login_required
def import_list(request: HttpRequest) -> HttpResponse:
    sites = access.scope(access.sites_visible(request.user), request.user, roles=IMPORT_ROLES)
    form = UploadForm(request.POST or None, request.FILES or None)
    form.fields["site"].choices = [(s.code, f"{s.code} {s.name}") for s in sites]
    if request.method == "POST" and form.is_valid():
        site = access.access_site_for_role(request.user, form.cleaned_data["site"], IMPORT_ROLES)
        upload = form.cleaned_data["extract"]
        folder = settings.IMPORT_UPLOAD_DIR
        folder.mkdir(parents=True, exist_ok=True)
        stored = folder / f"{uuid.uuid4().hex}-{get_valid_filename(upload.name)}"
        with open(stored, "wb") as handle:
            for chunk in upload.chunks():
                handle.write(chunk)
        try:
            batch = batch_create(site=site, path=stored, acting_user=request.user,
                                 dry_run=form.cleaned_data["dry_run"], source_name=upload.name)
        except RegistryError as error:
            form.add_error(None, error.summary())
        else:
            transaction.on_commit(lambda: extract_import_task.delay(batch.pk))
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
        writer = csv.DictWriter(response, ["file", "row", "column", "value", "message"])
        writer.writeheader()
        for error in batch.errors:
            writer.writerow({k: spreadsheet_safe(v) for k, v in error.items()})
        return response
    return render(request, "registry/import_detail.html", {"batch": batch})


@login_required
@require_POST
def import_resume(request: HttpRequest, batch_id: int) -> HttpResponse:
    batch = get_object_or_404(_batches(request.user), pk=batch_id)
    if batch.status in (ImportBatch.Status.NEEDS_MAPPING, ImportBatch.Status.FAILED):
        ImportBatch.objects.filter(pk=batch.pk).update(status=ImportBatch.Status.RECEIVED,
                                                       progress=0, stage="")
        transaction.on_commit(lambda: extract_import_task.delay(batch.pk))
    return redirect("import_detail", batch_id=batch.pk)
