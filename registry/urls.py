from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from registry.views import auth, common, imports, mapping, pages, quality, terms

KIND = "<str:kind>/<int:pk>"

urlpatterns = [
    path("", pages.home, name="home"),
    path("healthz", common.healthz, name="healthz"),
    path("patients/", pages.patient_list, name="patient_list"),
    path("patients/new/", pages.patient_new, name="patient_new"),
    path("patients/<str:registry_id>/", pages.chart, name="patient_chart"),
    path("patients/<str:registry_id>/submit/", pages.patient_submit, name="patient_submit"),
    path("patients/<str:registry_id>/<str:kind>/new/", pages.record_new, name="record_new"),
    path(f"patients/<str:registry_id>/{KIND}/edit/", pages.record_edit, name="record_edit"),
    path(f"patients/<str:registry_id>/{KIND}/audit/", pages.record_audit, name="record_audit"),
    path(f"patients/<str:registry_id>/{KIND}/query/", pages.query_new, name="query_new"),
    path(f"patients/<str:registry_id>/{KIND}/<str:action>/", pages.record_sign,
         name="record_sign"),
    path("queries/<int:query_id>/<str:action>/", pages.query_act, name="query_act"),
    path("imports/", imports.import_list, name="import_list"),
    path("imports/<int:batch_id>/", imports.import_detail, name="import_detail"),
    path("imports/<int:batch_id>/resume", imports.import_resume, name="import_resume"),
    path("mapping/", mapping.review_queue, name="mapping_queue"),
    path("mapping/act", mapping.review_act, name="mapping_act"),
    path("mapping/concepts", mapping.concept_search, name="concept_search"),
    path("quality/", quality.overview, name="quality_overview"),
    path("quality/run", quality.run_start, name="quality_run"),
    path("quality/export.csv", quality.export_csv, name="quality_export"),
    path("quality/<str:code>/", quality.site_page, name="quality_site"),
    path("quality/<str:code>/export.csv", quality.export_csv, name="quality_site_export"),
    path("quality/<str:code>/<str:check_code>/", quality.failing_records,
         name="quality_records"),
    path("models/", include("predictions.urls")),
    path("api/v1/", include("registry.api.urls")),
    path("research/", include("research.urls")),
    path("terms/suggest", terms.suggest, name="term_suggest"),
    path("terms/grades", terms.grades, name="term_grades"),
    path("terms/lab-preview", terms.lab_preview, name="lab_preview"),
    path("accounts/login/", auth.RegistryLoginView.as_view(), name="login"),
    path("accounts/login/code/", auth.login_token, name="login_token"),
    path("accounts/login/enrol/", auth.login_enrol, name="login_enrol"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/security/", auth.security, name="security"),
    # Every login, the admin's included, goes through the lockout and the second factor.
    path("admin/login/", auth.admin_login, name="admin_login"),
    path("i18n/", include("django.conf.urls.i18n")),
    path("admin/", admin.site.urls),
]
