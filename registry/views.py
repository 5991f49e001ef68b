from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from registry import access
from registry.models import Membership


@login_required
def home(request: HttpRequest) -> HttpResponse:
    memberships = (
        Membership.objects.filter(user=request.user, is_active=True)
        .select_related("site")
        .order_by("role", "site__code")
    )
    return render(
        request,
        "registry/home.html",
        {
            "memberships": memberships,
            "is_admin": access.is_registry_admin(request.user),
            "sites": access.sites_visible(request.user),
            "patient_count": access.patients_visible(request.user).count(),
        },
    )


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness for the container health check: the database answers."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})
