"""Django admin for every registry model, scoped through registry.access like everything else.

Admin writes go through the ModelAdmin's save, which simple-history records with the request's
user; the change reason is asked for in the form.
"""

from django import forms
from django.contrib import admin
from simple_history.admin import SimpleHistoryAdmin

from registry import access
from registry.models import (
    AdverseEvent,
    Concept,
    ConceptSynonym,
    Cycle,
    DataQuery,
    Department,
    Diagnosis,
    DrugAdministration,
    FollowUp,
    ImportBatch,
    LabResult,
    Membership,
    Patient,
    Site,
    SiteTerm,
    TermMapping,
    TreatmentLine,
    UnitConversion,
    Vocabulary,
)


class ReasonForm(forms.ModelForm):
    change_reason = forms.CharField(
        max_length=500, help_text="Why is this change being made? Kept in the audit trail."
    )


class AuditedAdmin(SimpleHistoryAdmin):
    form = ReasonForm

    def save_model(self, request, obj, form, change):
        obj._change_reason = form.cleaned_data["change_reason"]
        super().save_model(request, obj, form, change)

    def delete_model(self, request, obj):
        obj._change_reason = "deleted in admin"
        super().delete_model(request, obj)


class ScopedAdmin(AuditedAdmin):
    """Lists and opens only rows of the user's sites; another site's row is not found."""

    def get_queryset(self, request):
        return access.scope(super().get_queryset(request), request.user)


class RegistryWideAdmin(AuditedAdmin):
    """Shared reference data (vocabularies): readable by staff, changed by registry admins."""

    def has_change_permission(self, request, obj=None):
        return access.is_registry_admin(request.user)

    has_add_permission = has_delete_permission = (
        lambda self, request, obj=None: access.is_registry_admin(request.user)
    )


@admin.register(Site)
class SiteAdmin(ScopedAdmin):
    list_display = ["code", "name", "province", "tier", "is_active"]
    search_fields = ["code", "name", "province"]
    list_filter = ["tier", "is_active"]


@admin.register(Department)
class DepartmentAdmin(AuditedAdmin):
    list_display = ["name", "site"]
    search_fields = ["name", "site__code"]

    def get_queryset(self, request):
        ids = access.site_ids_for(request.user)
        qs = super().get_queryset(request)
        return qs if ids is None else qs.filter(site_id__in=ids)


@admin.register(Membership)
class MembershipAdmin(AuditedAdmin):
    list_display = ["user", "role", "site", "is_active"]
    list_filter = ["role", "is_active"]
    search_fields = ["user__username", "site__code"]

    def get_queryset(self, request):
        return access.memberships_visible(request.user)


@admin.register(Patient)
class PatientAdmin(ScopedAdmin):
    list_display = ["registry_id", "site", "sex", "birth_year", "status", "withdrawn_date"]
    list_filter = ["status", "sex", "consent_scope"]
    search_fields = ["registry_id"]
    readonly_fields = ["registry_id", "hospital_number_hash", "version"]
    raw_id_fields = ["department"]


class ClinicalAdmin(ScopedAdmin):
    list_filter = ["status"]
    readonly_fields = ["version"]
    search_fields = ["patient__registry_id"]


@admin.register(Diagnosis)
class DiagnosisAdmin(ClinicalAdmin):
    list_display = ["patient", "diagnosis_date", "cancer_term", "cancer", "stage_group", "status"]
    raw_id_fields = ["patient", "cancer_term", "cancer", "morphology_term", "morphology"]


@admin.register(TreatmentLine)
class TreatmentLineAdmin(ClinicalAdmin):
    list_display = ["patient", "line_no", "regimen_term", "start_date", "status"]
    raw_id_fields = ["patient", "regimen_term", "regimen"]


@admin.register(Cycle)
class CycleAdmin(ClinicalAdmin):
    list_display = ["patient", "line", "cycle_no", "start_date", "status"]
    raw_id_fields = ["patient", "line"]


@admin.register(DrugAdministration)
class DrugAdministrationAdmin(ClinicalAdmin):
    list_display = ["patient", "cycle", "day", "drug_term", "drug", "dose", "dose_unit", "purpose"]
    raw_id_fields = ["patient", "cycle", "drug_term", "drug"]


@admin.register(AdverseEvent)
class AdverseEventAdmin(ClinicalAdmin):
    list_display = ["patient", "ae_term", "ae", "grade", "onset_date", "serious", "status"]
    raw_id_fields = ["patient", "ae_term", "ae", "cycle"]


@admin.register(LabResult)
class LabResultAdmin(ClinicalAdmin):
    list_display = ["patient", "test_term", "collected_date", "value_text", "unit_term",
                    "value_canonical", "unit_flag"]
    raw_id_fields = ["patient", "test_term", "lab", "unit_term", "unit", "canonical_unit", "cycle"]


@admin.register(FollowUp)
class FollowUpAdmin(ClinicalAdmin):
    list_display = ["patient", "followup_date", "vital_status", "progression", "status"]
    raw_id_fields = ["patient"]


@admin.register(SiteTerm)
class SiteTermAdmin(ScopedAdmin):
    list_display = ["text", "domain", "site", "frequency"]
    list_filter = ["domain"]
    search_fields = ["text", "normalised"]


@admin.register(TermMapping)
class TermMappingAdmin(ScopedAdmin):
    list_display = ["site_term", "concept", "status", "method", "score", "reviewed_by"]
    list_filter = ["status", "method"]
    raw_id_fields = ["site_term", "concept"]


@admin.register(Vocabulary)
class VocabularyAdmin(RegistryWideAdmin):
    list_display = ["code", "name", "version"]


class SynonymInline(admin.TabularInline):
    model = ConceptSynonym
    extra = 0


@admin.register(Concept)
class ConceptAdmin(RegistryWideAdmin):
    list_display = ["code", "name_en", "name_zh", "vocabulary", "domain", "is_active"]
    list_filter = ["vocabulary", "domain"]
    search_fields = ["code", "name_en", "name_zh", "synonyms__name"]
    inlines = [SynonymInline]


@admin.register(UnitConversion)
class UnitConversionAdmin(RegistryWideAdmin):
    list_display = ["lab", "from_unit", "to_unit", "factor"]


@admin.register(DataQuery)
class DataQueryAdmin(ScopedAdmin):
    list_display = ["record_model", "record_id", "field", "status", "automatic", "opened_at"]
    list_filter = ["status", "automatic"]
    raw_id_fields = ["patient"]


@admin.register(ImportBatch)
class ImportBatchAdmin(ScopedAdmin):
    list_display = ["pk", "site", "source_name", "uploaded_by", "created_at", "status"]
    list_filter = ["status"]
    readonly_fields = ["files", "counts", "errors", "unmapped"]
