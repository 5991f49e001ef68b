from django.urls import path

from research.views import pages, releases, requests

app_name = "research"

urlpatterns = [
    path("", pages.home, name="home"),
    path("catalog/", pages.catalog_page, name="catalog"),
    path("requests/new/", requests.request_new, name="request_new"),
    path("requests/feasibility", requests.feasibility, name="feasibility"),
    path("requests/<int:pk>/", requests.request_detail, name="request_detail"),
    path("requests/<int:pk>/edit/", requests.request_edit, name="request_edit"),
    path("requests/<int:pk>/submit/", requests.request_submit, name="request_submit"),
    path("requests/<int:pk>/vote/", requests.vote, name="vote"),
    path("requests/<int:pk>/conflict/", requests.recusal, name="recusal"),
    path("requests/<int:pk>/decision/", requests.decision, name="decision"),
    path("requests/<int:pk>/sites/<int:participation_id>/answer/", requests.answer,
         name="answer"),
    path("requests/<int:pk>/releases/", releases.release_new, name="release_new"),
    path("releases/<int:pk>/", releases.release_detail, name="release_detail"),
    path("releases/<int:pk>/status", releases.release_status, name="release_status"),
    path("releases/<int:pk>/files/<str:name>", releases.release_file, name="release_file"),
]
