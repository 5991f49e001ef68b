"""URLs of the API, included under /api/v1/ (registry/urls.py).

Endpoints of another app are included by name, e.g. `path("", include("research.api_urls"))`,
as registry/urls.py includes predictions.urls: the registry imports no other app's code.
Names are in the "api" namespace (`reverse("api:me")`).
"""

from django.urls import include, path

from registry.api import views

app_name = "api"

urlpatterns = [
    path("me/", views.MeView.as_view(), name="me"),
    path("schema/", views.SchemaView.as_view(), name="schema"),
    path("docs/", views.DocsView.as_view(), name="docs"),
    path("", include("research.api_urls")),
    path("", include("predictions.api_urls")),
]
