from django.urls import path

from research.views import pages, requests

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
]
