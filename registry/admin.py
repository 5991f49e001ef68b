"""Django admin for every registry model, scoped through registry.access like everything else.

Who may do what here is decided by registry roles (registry.access), never by Django's model
permissions or groups, so a role is the single source of truth:

- a registry admin sees everything and manages the registry-wide reference data: sites,
  departments, people and their memberships, vocabularies, concepts and unit conversions; every
  change asks for a reason, kept in the audit trail;
- a staff member holding a site role sees the rows of their own sites, read-only;
- clinical records (patients and every clinical kind, data queries, import batches, the sites'
  words and their mappings) are read-only for everyone: they change through the audited
  services, which check the workflow (locks, versions) that a plain model form does not.

Another site's row is not found anywhere (change, delete, history, a past version): a 404. The
history pages are scoped like the rows, and reverting to a past version is turned off.
"""

import math

from axes.admin import AccessAttemptAdmin, AccessFailureLogAdmin, AccessLogAdmin
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.models import Group, User
from django.core.exceptions import BadRequest, PermissionDenied, ValidationError
from django.db import models, transaction
from django.http import Http404
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from django_otp.plugins.otp_totp.models import TOTPDevice
from simple_history.admin import SimpleHistoryAdmin
from simple_history.utils import get_history_model_for_model

from registry import access, limits
from registry.api.scopes import Scope
from registry.errors import NotPermitted, ValidationFailed
from registry.models import (
    AdverseEvent,
    ApiToken,
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
from registry.models.api import API_TOKEN_EXPIRES_DAYS_MAX, API_TOKEN_EXPIRES_DAYS_MIN
from registry.services.api_tokens import api_token_check, api_token_create, api_token_revoke
from registry.services.organisation import staff_grant_for_role

# A reason typed here obeys the same limit as one typed on the registry's own pages.
CHANGE_REASON_MAX_LENGTH = limits.REASON_MAX_LENGTH
DELETED_IN_ADMIN = "deleted in admin"


def _is_registry_admin(request) -> bool:
    # Asked many times per page; the roles cannot change during one request.
    if not hasattr(request, "_registry_admin"):
        request._registry_admin = access.is_registry_admin(request.user)
    return request._registry_admin


def _may_view(request) -> bool:
    """Registry admins, and staff holding a role at one of their active sites."""
    if not hasattr(request, "_registry_viewer"):
        request._registry_viewer = _is_registry_admin(request) or bool(
            access.site_ids_for(request.user)
        )
    return request._registry_viewer


def _choices_for(model, user):
    """The rows of `model` a form may offer the user; None when `model` is not site-bound."""
    if model is Department:
        return access.departments_visible(user)
    if model in access.SELECTORS:
        return access.SELECTORS[model](user)
    return None


def _refuse_nul_bytes(request) -> None:
    # PostgreSQL text cannot hold NUL: a filter or search holding one would be a server error.
    if any("\x00" in key or "\x00" in value
           for key, values in request.GET.lists() for value in values):
        raise BadRequest(_("A query parameter holds a NUL character, which is not allowed."))


def _jsonb_problem(value) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return _("Numbers must be finite: NaN and Infinity are not allowed.")
    if isinstance(value, str) and "\x00" in value:
        return _("Text may not contain a NUL character.")
    items = value.items() if isinstance(value, dict) else (
        enumerate(value) if isinstance(value, list) else ())
    for key, item in items:
        problem = _jsonb_problem(key) or _jsonb_problem(item)
        if problem:
            return problem
    return None


class JsonbFormField(forms.JSONField):
    """JSON that PostgreSQL's jsonb can hold (finite numbers, no NUL character); empty is {}."""

    def to_python(self, value):
        if not self.disabled and value in self.empty_values:
            return {}
        converted = super().to_python(value)
        problem = None if self.disabled else _jsonb_problem(converted)
        if problem:
            raise ValidationError(problem, code="invalid")
        return converted


class ReasonForm(forms.ModelForm):
    change_reason = forms.CharField(
        label=_("Reason for the change"),
        max_length=CHANGE_REASON_MAX_LENGTH,
        help_text=_("Why is this change being made? Kept in the audit trail."),
    )


class RefuseNulBytes:
    """Every view of a ModelAdmin: a NUL character in the query string is a clear 400."""

    def changelist_view(self, request, extra_context=None):
        _refuse_nul_bytes(request)
        return super().changelist_view(request, extra_context)

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        _refuse_nul_bytes(request)
        return super().changeform_view(request, object_id, form_url, extra_context)

    def delete_view(self, request, object_id, extra_context=None):
        _refuse_nul_bytes(request)
        return super().delete_view(request, object_id, extra_context)

    def history_view(self, request, object_id, extra_context=None):
        _refuse_nul_bytes(request)
        return super().history_view(request, object_id, extra_context)


class RegistryAdmin(RefuseNulBytes, SimpleHistoryAdmin):
    """Read-only and scoped by default; roles, not Django permissions, decide what is shown.

    Subclasses that hold site-bound rows scope `get_queryset`; the history pages reuse that rule
    through access.scope_history.
    """

    form = forms.ModelForm
    formfield_overrides = {models.JSONField: {"form_class": JsonbFormField}}

    # Permissions: roles only.

    def has_module_permission(self, request):
        return _may_view(request)

    def has_view_permission(self, request, obj=None):
        return _may_view(request)

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    # Another site's row (or a malformed id) is not found: a 404, not the admin's redirect that
    # would tell "perhaps it was deleted".

    def _not_found(self) -> Http404:
        return Http404(f"No {self.model._meta.verbose_name} matches the given query.")

    def get_object(self, request, object_id, from_field=None):
        obj = super().get_object(request, object_id, from_field)
        if obj is None:
            raise self._not_found()
        return obj

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        choices = _choices_for(db_field.related_model, request.user)
        if choices is not None:
            kwargs["queryset"] = choices
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    # History: scoped like the rows; reverting is turned off (a past version would be written
    # back without the workflow's checks).

    def get_history_queryset(self, request, history_manager, pk_name, object_id):
        return access.scope_history(
            super().get_history_queryset(request, history_manager, pk_name, object_id),
            request.user,
        )

    def revert_disabled(self, request, obj=None):
        return True

    def _pk_or_404(self, field, value):
        try:
            return field.to_python(unquote(value))
        except ValidationError:
            raise self._not_found() from None

    def history_view(self, request, object_id, extra_context=None):
        pk = self._pk_or_404(self.model._meta.pk, object_id)
        return super().history_view(request, str(pk), extra_context)

    def history_form_view(self, request, object_id, version_id, extra_context=None):
        _refuse_nul_bytes(request)
        history_model = get_history_model_for_model(self.model)
        pk = self._pk_or_404(self.model._meta.pk, object_id)
        history_id = self._pk_or_404(history_model._meta.pk, version_id)
        versions = access.scope_history(history_model.objects.all(), request.user)
        if not versions.filter(**{self.model._meta.pk.attname: pk, "pk": history_id}).exists():
            raise self._not_found()
        if request.method not in ("GET", "HEAD"):
            raise PermissionDenied(_("Reverting to an earlier version is turned off."))
        request._viewing_history = True
        return super().history_form_view(request, str(pk), str(history_id), extra_context)

    def get_readonly_fields(self, request, obj=None):
        if getattr(request, "_viewing_history", False):
            editable = [f.name for f in self.model._meta.fields if f.editable and not f.primary_key]
            return editable + [f for f in self.readonly_fields if f not in editable]
        return super().get_readonly_fields(request, obj)

    def get_fields(self, request, obj=None):
        fields = super().get_fields(request, obj)
        if getattr(request, "_viewing_history", False):
            return [name for name in fields if name != "change_reason"]
        return fields


class ScopedReadOnlyAdmin(RegistryAdmin):
    """Clinical records and the sites' own data: listed and opened at the user's sites only."""

    def get_queryset(self, request):
        return access.scope(super().get_queryset(request), request.user)


class ReferenceAdmin(RegistryAdmin):
    """Registry-wide reference data: readable by staff with a role, changed by registry admins,
    each change with a reason kept in the audit trail."""

    form = ReasonForm

    def has_add_permission(self, request, obj=None):
        return _is_registry_admin(request)

    def has_change_permission(self, request, obj=None):
        return _is_registry_admin(request)

    def has_delete_permission(self, request, obj=None):
        return _is_registry_admin(request)

    def save_model(self, request, obj, form, change):
        obj._change_reason = form.cleaned_data["change_reason"]
        super().save_model(request, obj, form, change)

    def save_formset(self, request, form, formset, change):
        # Inline rows (kept, changed or deleted) are part of the same change: its reason and user.
        for inline_form in formset.forms:
            inline_form.instance._change_reason = form.cleaned_data["change_reason"]
            inline_form.instance._history_user = request.user
        super().save_formset(request, form, formset, change)

    def delete_model(self, request, obj):
        obj._change_reason = DELETED_IN_ADMIN
        obj._history_user = request.user
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        # One by one, so that each deletion leaves its audit row with the user and a reason.
        with transaction.atomic():
            for obj in queryset:
                self.delete_model(request, obj)


class ReferenceInline(admin.TabularInline):
    """Rows edited inside a reference-data form: the same rule as the form they sit in."""

    extra = 0

    def has_view_permission(self, request, obj=None):
        return _may_view(request)

    def has_add_permission(self, request, obj=None):
        return _is_registry_admin(request)

    def has_change_permission(self, request, obj=None):
        return _is_registry_admin(request)

    def has_delete_permission(self, request, obj=None):
        return _is_registry_admin(request)


# Organisation: registry-wide reference data, scoped for readers.

@admin.register(Site)
class SiteAdmin(ReferenceAdmin):
    list_display = ["code", "name", "province", "tier", "is_active"]
    search_fields = ["code", "name", "province"]
    list_filter = ["tier", "is_active"]

    def get_queryset(self, request):
        return access.scope(super().get_queryset(request), request.user)


@admin.register(Department)
class DepartmentAdmin(ReferenceAdmin):
    list_display = ["name", "site"]
    search_fields = ["name", "site__code"]

    def get_queryset(self, request):
        return access.departments_visible(request.user)


@admin.register(Membership)
class MembershipAdmin(ReferenceAdmin):
    list_display = ["user", "role", "site", "is_active"]
    list_filter = ["role", "is_active"]
    search_fields = ["user__username", "site__code"]

    def get_queryset(self, request):
        return access.memberships_visible(request.user)

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if obj.is_active:
            staff_grant_for_role(user=obj.user, role=obj.role)


# Clinical records: read-only, scoped.

@admin.register(Patient)
class PatientAdmin(ScopedReadOnlyAdmin):
    list_display = ["registry_id", "site", "sex", "birth_year", "status", "withdrawn_date"]
    list_filter = ["status", "sex", "consent_scope"]
    search_fields = ["registry_id"]
    readonly_fields = ["registry_id", "hospital_number_hash", "version"]
    raw_id_fields = ["department"]


class ClinicalAdmin(ScopedReadOnlyAdmin):
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


@admin.register(DataQuery)
class DataQueryAdmin(ScopedReadOnlyAdmin):
    list_display = ["record_model", "record_id", "field", "status", "automatic", "opened_at"]
    list_filter = ["status", "automatic"]
    raw_id_fields = ["patient"]


@admin.register(ImportBatch)
class ImportBatchAdmin(ScopedReadOnlyAdmin):
    list_display = ["pk", "site", "source_name", "uploaded_by", "created_at", "status"]
    list_filter = ["status"]
    readonly_fields = ["files", "counts", "errors", "unmapped"]


# The sites' own words and their mappings: read-only (the review queue maps them), scoped.

@admin.register(SiteTerm)
class SiteTermAdmin(ScopedReadOnlyAdmin):
    list_display = ["text", "domain", "site", "frequency"]
    list_filter = ["domain"]
    search_fields = ["text", "normalised"]


@admin.register(TermMapping)
class TermMappingAdmin(ScopedReadOnlyAdmin):
    list_display = ["site_term", "concept", "status", "method", "score", "reviewed_by"]
    list_filter = ["status", "method"]
    raw_id_fields = ["site_term", "concept"]


# Standard vocabularies: registry-wide reference data.

@admin.register(Vocabulary)
class VocabularyAdmin(ReferenceAdmin):
    list_display = ["code", "name", "version"]


class SynonymInline(ReferenceInline):
    model = ConceptSynonym


@admin.register(Concept)
class ConceptAdmin(ReferenceAdmin):
    list_display = ["code", "name_en", "name_zh", "vocabulary", "domain", "is_active"]
    list_filter = ["vocabulary", "domain"]
    search_fields = ["code", "name_en", "name_zh", "synonyms__name"]
    inlines = [SynonymInline]


@admin.register(UnitConversion)
class UnitConversionAdmin(ReferenceAdmin):
    list_display = ["lab", "from_unit", "to_unit", "factor"]


# People. Their roles are memberships (above), not Django's groups or permissions, which the
# registry does not read; people are deactivated, never deleted, so their audit rows keep a name.

admin.site.unregister(Group)
admin.site.unregister(User)


@admin.register(User)
class RegistryUserAdmin(RefuseNulBytes, UserAdmin):
    _ROLE_FREE_FIELDS = {"is_superuser", "groups", "user_permissions"}

    def has_module_permission(self, request):
        return _is_registry_admin(request)

    def has_view_permission(self, request, obj=None):
        return _is_registry_admin(request)

    def has_add_permission(self, request):
        return _is_registry_admin(request)

    def has_change_permission(self, request, obj=None):
        # A superuser's account is changed by a superuser only.
        if obj is not None and obj.is_superuser and not request.user.is_superuser:
            return False
        return _is_registry_admin(request)

    def has_delete_permission(self, request, obj=None):
        return False

    def get_object(self, request, object_id, from_field=None):
        obj = super().get_object(request, object_id, from_field)
        if obj is None:
            raise Http404("No user matches the given query.")
        return obj

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if request.user.is_superuser:
            return fieldsets
        return [
            (name, {**options, "fields": [f for f in options["fields"]
                                          if f not in self._ROLE_FREE_FIELDS]})
            for name, options in fieldsets
        ]


# Login defence. Lockouts and second-factor devices belong to the registry admin alone: they
# unlock a username by deleting its attempts and reset a lost phone by deleting its device.
# Nobody adds or edits them here (a device is enrolled by its owner at login).

class RegistryAdminOnly:
    def has_module_permission(self, request):
        return _is_registry_admin(request)

    def has_view_permission(self, request, obj=None):
        return _is_registry_admin(request)

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return _is_registry_admin(request)


class LockoutAdmin(RegistryAdminOnly, RefuseNulBytes, AccessAttemptAdmin):
    pass


class LoginLogAdmin(RegistryAdminOnly, RefuseNulBytes, AccessLogAdmin):
    def has_delete_permission(self, request, obj=None):
        return False  # the log of logins is kept


class LoginFailureLogAdmin(RegistryAdminOnly, RefuseNulBytes, AccessFailureLogAdmin):
    def has_delete_permission(self, request, obj=None):
        return False


class SecondFactorDeviceAdmin(RegistryAdminOnly, RefuseNulBytes, admin.ModelAdmin):
    # Not django-otp's own admin: its pages show a device's secret key and QR code, which no one
    # but the device's owner, at enrolment, may see.
    list_display = ["user", "name", "confirmed", "last_used_at"]
    list_filter = ["confirmed"]
    search_fields = ["user__username", "name"]
    fields = ["user", "name", "confirmed", "created_at", "last_used_at"]
    readonly_fields = fields


for _model, _admin_class in [(AccessAttempt, LockoutAdmin), (AccessLog, LoginLogAdmin),
                             (AccessFailureLog, LoginFailureLogAdmin),
                             (TOTPDevice, SecondFactorDeviceAdmin)]:
    admin.site.unregister(_model)
    admin.site.register(_model, _admin_class)


# API tokens (docs/api.md): the registry admin's alone. Created through the service, whose text
# is shown once, on the page that answers the creation, and kept nowhere; revoked through the
# service; never edited or deleted (a revoked token stays, with who revoked it). The digest is
# not shown anywhere.

class ApiTokenAddForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        label=_("Scopes"), choices=Scope.choices, widget=forms.CheckboxSelectMultiple)
    expires_days = forms.IntegerField(
        label=_("Expires after (days)"), required=False,
        min_value=API_TOKEN_EXPIRES_DAYS_MIN, max_value=API_TOKEN_EXPIRES_DAYS_MAX,
        help_text=_("Empty: the token does not expire."))

    # The registry admin creating the token (set by ApiTokenAdmin.get_form).
    acting_user: User | None = None

    class Meta:
        model = ApiToken
        fields = ["user", "name"]

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        try:
            cleaned["name"] = api_token_check(
                user=cleaned["user"], name=cleaned["name"], scopes=cleaned["scopes"],
                expires_days=cleaned.get("expires_days"), acting_user=self.acting_user)
        except ValidationFailed as exc:
            for field, field_messages in exc.errors.items():
                for message in field_messages:
                    self.add_error(field if field in self.fields else None, message)
        except NotPermitted as exc:
            self.add_error(None, exc.summary())
        return cleaned


@admin.register(ApiToken)
class ApiTokenAdmin(RegistryAdminOnly, RefuseNulBytes, admin.ModelAdmin):
    list_display = ["name", "user", "prefix", "scope_list", "state", "created_at", "expires_at",
                    "last_used_at", "revoked_at"]
    list_filter = ["revoked_at", "expires_at"]
    search_fields = ["name", "prefix", "user__username"]
    list_select_related = ["user"]
    raw_id_fields = ["user"]
    actions = ["revoke"]
    VIEW_FIELDS = ["user", "name", "prefix", "scopes", "created_at", "created_by", "expires_at",
                   "revoked_at", "revoked_by", "revoke_reason", "last_used_at"]
    readonly_fields = VIEW_FIELDS

    def has_add_permission(self, request, obj=None):
        return _is_registry_admin(request)

    def has_delete_permission(self, request, obj=None):
        return False

    def has_revoke_permission(self, request):
        return _is_registry_admin(request)

    def get_fields(self, request, obj=None):
        return ["user", "name", "scopes", "expires_days"] if obj is None else self.VIEW_FIELDS

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.VIEW_FIELDS

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = type("ApiTokenAddForm", (ApiTokenAddForm,),
                                  {"acting_user": request.user})
        return super().get_form(request, obj, change=change, **kwargs)

    def get_object(self, request, object_id, from_field=None):
        obj = super().get_object(request, object_id, from_field)
        if obj is None:
            raise Http404("No API token matches the given query.")
        return obj

    @admin.display(description=_("Scopes"))
    def scope_list(self, obj):
        return ", ".join(obj.scopes)

    @admin.display(description=_("State"))
    def state(self, obj):
        return ApiToken.State(obj.state_at(timezone.now())).label

    def save_form(self, request, form, change):
        # Only adding reaches here (nothing is changed in this admin): the service creates
        # the token, and the admin logs and answers about the token it made.
        data = form.cleaned_data
        token, text = api_token_create(
            user=data["user"], name=data["name"], scopes=data["scopes"],
            expires_days=data.get("expires_days"), acting_user=request.user)
        request._api_token_text = text
        return token

    def save_model(self, request, obj, form, change):
        pass  # saved by api_token_create in save_form

    def save_related(self, request, form, formsets, change):
        pass

    def response_add(self, request, obj, post_url_continue=None):
        """The token's text, once, on this page: the message is read while the page renders,
        so it is never stored in the session or a cookie; the page is not cached."""
        messages.success(request, _(
            "The token %(name)s for %(user)s is %(text)s. Copy it now: it is shown only "
            "once and cannot be recovered.") % {
            "name": obj.name, "user": obj.user.username, "text": request._api_token_text})
        response = TemplateResponse(request, "admin/registry/apitoken/created.html", {
            **self.admin_site.each_context(request),
            "title": _("API token created"), "opts": self.opts, "token": obj,
        })
        add_never_cache_headers(response)
        return response

    @admin.action(description=_("Revoke the selected API tokens"), permissions=["revoke"])
    def revoke(self, request, queryset):
        revoked = 0
        for token in queryset.filter(revoked_at__isnull=True):
            api_token_revoke(token=token, acting_user=request.user)
            revoked += 1
        self.message_user(request, ngettext("%(count)d API token revoked.",
                                            "%(count)d API tokens revoked.", revoked)
                          % {"count": revoked})
