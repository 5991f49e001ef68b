"""URLs of the committee's endpoints, included under /api/v1/ by registry/api/urls.py (names in
its "api" namespace: `reverse("api:request_detail", kwargs={"pk": 1})`)."""

from django.urls import path

from research.api import budget, partner, views

urlpatterns = [
    path("catalog/variables/", views.VariableCatalogApi.as_view(), name="catalog_variables"),
    path("requests/", views.RequestListApi.as_view(), name="request_list"),
    path("requests/<int:pk>/", views.RequestDetailApi.as_view(), name="request_detail"),
    path("requests/<int:pk>/submit/", views.RequestSubmitApi.as_view(), name="request_submit"),
    path("requests/<int:pk>/feasibility/", views.RequestFeasibilityApi.as_view(),
         name="request_feasibility"),
    path("requests/<int:pk>/votes/", views.RequestVotesApi.as_view(), name="request_votes"),
    path("requests/<int:pk>/recusal/", views.RequestRecusalApi.as_view(),
         name="request_recusal"),
    path("requests/<int:pk>/decision/", views.RequestDecisionApi.as_view(),
         name="request_decision"),
    path("requests/<int:pk>/releases/", views.RequestReleasesApi.as_view(),
         name="request_releases"),
    path("participations/", views.ParticipationListApi.as_view(), name="participation_list"),
    path("participations/<int:pk>/answer/", views.ParticipationAnswerApi.as_view(),
         name="participation_answer"),
    path("releases/", views.ReleaseListApi.as_view(), name="release_list"),
    path("releases/<int:pk>/", views.ReleaseDetailApi.as_view(), name="release_detail"),
    path("releases/<int:pk>/files/<str:name>", views.ReleaseFileApi.as_view(),
         name="release_file"),
    path("privacy-budget/", budget.PrivacyBudgetApi.as_view(), name="privacy_budget"),
    path("aggregates/", partner.AggregatesApi.as_view(), name="aggregates"),
    path("aggregates/dimensions/", partner.AggregateDimensionsApi.as_view(),
         name="aggregate_dimensions"),
    path("feasibility/", partner.FeasibilityApi.as_view(), name="feasibility"),
]
