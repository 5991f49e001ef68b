"""Releases: asked for by the study's team on an approved request, followed while they build,
downloaded file by file (each download recorded by research.services.releases)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from registry.errors import RegistryError
from research.models import Download
from research.selectors.pages import release_page
from research.selectors.requests import access_release, access_request
from research.services import releases as services
from research.views.common import refusal_status, show_errors
from research.views.requests import refused_on_request_page


@login_required
@require_POST
def release_new(request: HttpRequest, pk: int) -> HttpResponse:
    data_request = access_request(request.user, pk)
    try:
        release = services.release_request(request=data_request, acting_user=request.user)
    except RegistryError as error:
        return refused_on_request_page(request, data_request, error)
    messages.success(request, _("%(release)s is queued; this page shows its progress.")
                     % {"release": release.name})
    return redirect("research:release_detail", pk=release.pk)


def _page(request: HttpRequest, release, status: int = 200) -> HttpResponse:
    return render(request, "research/release_detail.html",
                  {"page": release_page(request.user, release), "release": release},
                  status=status)


@login_required
def release_detail(request: HttpRequest, pk: int) -> HttpResponse:
    return _page(request, access_release(request.user, pk))


@login_required
@require_GET
def release_status(request: HttpRequest, pk: int) -> JsonResponse:
    release = access_release(request.user, pk)
    return JsonResponse({"status": release.status, "label": release.get_status_display(),
                         "progress": release.progress, "note": release.progress_note})


@login_required
@require_GET
def release_file(request: HttpRequest, pk: int, name: str) -> HttpResponse:
    release = access_release(request.user, pk)
    try:
        path, file = services.release_download(release=release, name=name,
                                               acting_user=request.user,
                                               channel=Download.Channel.WEB)
    except RegistryError as error:
        show_errors(request, None, error)
        return _page(request, release, status=refusal_status(error))
    return FileResponse(path.open("rb"), as_attachment=True, filename=file.name)
