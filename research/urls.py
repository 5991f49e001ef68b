from django.urls import path

from research.views import pages, partners, releases, requests

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
    # Partner organisations and their tokens (registry admin).
    path("partners/", partners.partners, name="partners"),
    path("partners/organisations/", partners.organisation_add, name="partner_organisation_add"),
    path("partners/organisations/<int:pk>/people/", partners.person_add,
         name="partner_person_add"),
    path("partners/people/<int:pk>/tokens/", partners.token_add, name="partner_token_add"),
    path("partners/tokens/<int:pk>/revoke/", partners.token_revoke,
         name="partner_token_revoke"),
]
