from django.urls import path

from predictions import views

app_name = "predictions"

urlpatterns = [
    path("", views.model_list, name="model_list"),
    path("train/", views.training_start, name="training_start"),
    path("runs/<int:run_id>/", views.run_detail, name="run_detail"),
    path("<str:risk_model>/", views.model_detail, name="model_detail"),
    path("<str:risk_model>/champion/", views.champion_move_view, name="champion_move"),
    path("<str:risk_model>/v<int:number>/", views.version_detail, name="version_detail"),
    path("<str:risk_model>/v<int:number>/card/", views.model_card, name="model_card"),
]
