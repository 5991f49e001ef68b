"""URLs of the risk-model endpoints, included under /api/v1/ by registry/api/urls.py (names in
its "api" namespace: `reverse("api:risk_model_score", kwargs={"risk_model": "cinv"})`)."""

from django.urls import path

from predictions.api import views

urlpatterns = [
    path("models/", views.RiskModelListApi.as_view(), name="risk_model_list"),
    path("models/<str:risk_model>/score/", views.RiskModelScoreApi.as_view(),
         name="risk_model_score"),
    path("models/<str:risk_model>/schema/", views.RiskModelSchemaApi.as_view(),
         name="risk_model_schema"),
    path("models/<str:risk_model>/card/", views.RiskModelCardApi.as_view(),
         name="risk_model_card"),
]
