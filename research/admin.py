"""Django admin of the data-use committee's models, decided by registry roles like the
registry's own admin (registry.admin), never by Django's model permissions or groups.

- Organisations and affiliations are the registry admin's to keep: added and changed here
  through the services (organisation_upsert, affiliation_set), which write the audit trail.
  An organisation's name and an affiliation's person are fixed once saved (the services find
  the row by them); nothing is deleted (requests and history point to them).
- Requests, votes, recusals, decisions, sites' answers, releases and downloads are read-only:
  they change through the committee's pages, whose services check recusal, quorum and state.
- Only the registry admin sees any of it; a staff member without that role is refused, whatever
  Django permissions they hold (requests and votes are not a site's rows to scope by site).
"""

from django.contrib import admin
from django.http import Http404

from registry import admin as registry_admin
from registry.admin import RefuseNulBytes, RegistryAdmin, _is_registry_admin
from research.models import (
    Affiliation,
    DataRequest,
    Decision,
    Download,
    Organisation,
    PartnerQuery,
    Recusal,
    Release,
    ReleaseFile,
    SiteParticipation,
    Vote,
)
from research.services.requests import affiliation_set, organisation_upsert


class RegistryAdminOnly(registry_admin.RegistryAdminOnly):
    """Seen by the registry admin alone; read-only (nothing is deleted here either) unless a
    subclass says otherwise."""

    def has_delete_permission(self, request, obj=None):
        return False


class ResearchAdmin(RegistryAdminOnly, RegistryAdmin):
    """Models with an audit trail: their history pages as in the registry's admin."""


class ResearchRecordAdmin(RegistryAdminOnly, RefuseNulBytes, admin.ModelAdmin):
    """Models without an audit trail of their own (they are never changed once written)."""

    def get_object(self, request, object_id, from_field=None):
        obj = super().get_object(request, object_id, from_field)
        if obj is None:
            raise Http404(f"No {self.model._meta.verbose_name} matches the given query.")
        return obj


class KeptByTheRegistryAdmin(ResearchAdmin):
    def has_add_permission(self, request, obj=None):
        return _is_registry_admin(request)

    def has_change_permission(self, request, obj=None):
        return _is_registry_admin(request)

    def _saved(self, obj, saved) -> None:
        # The admin logs and redirects to the object it was given: make it the saved row.
        obj.pk = saved.pk
        obj.__dict__.update({f.attname: getattr(saved, f.attname)
                             for f in saved._meta.concrete_fields})


@admin.register(Organisation)
class OrganisationAdmin(KeptByTheRegistryAdmin):
    list_display = ["name", "kind", "site", "created_at"]
    list_filter = ["kind"]
    search_fields = ["name"]
    fields = ["name", "kind", "site"]

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and not getattr(request, "_viewing_history", False):
            return ["name"]
        return super().get_readonly_fields(request, obj)

    def save_model(self, request, obj, form, change):
        self._saved(obj, organisation_upsert(name=obj.name, kind=obj.kind, site=obj.site,
                                             acting_user=request.user))


@admin.register(Affiliation)
class AffiliationAdmin(KeptByTheRegistryAdmin):
    list_display = ["user", "organisation"]
    search_fields = ["user__username", "organisation__name"]
    raw_id_fields = ["user"]
    fields = ["user", "organisation"]

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and not getattr(request, "_viewing_history", False):
            return ["user"]
        return super().get_readonly_fields(request, obj)

    def save_model(self, request, obj, form, change):
        self._saved(obj, affiliation_set(user=obj.user, organisation=obj.organisation,
                                         acting_user=request.user))


@admin.register(DataRequest)
class DataRequestAdmin(ResearchAdmin):
    list_display = ["reference", "title", "requester", "status", "revision", "submitted_at"]
    list_filter = ["status", "purpose"]
    search_fields = ["title", "requester__username"]


@admin.register(SiteParticipation)
class SiteParticipationAdmin(ResearchAdmin):
    list_display = ["request", "site", "answer", "answered_by", "answered_at"]
    list_filter = ["answer"]


@admin.register(Release)
class ReleaseAdmin(ResearchAdmin):
    list_display = ["name", "status", "patients", "requested_by", "created_at", "expires_at"]
    list_filter = ["status"]
    exclude = ["key"]  # the release's pseudonym key is never shown


@admin.register(Recusal)
class RecusalAdmin(ResearchRecordAdmin):
    list_display = ["request", "member", "reason", "created_at"]
    list_filter = ["reason"]


@admin.register(Vote)
class VoteAdmin(ResearchRecordAdmin):
    list_display = ["request", "revision", "member", "choice", "cast_at"]
    list_filter = ["choice"]


@admin.register(Decision)
class DecisionAdmin(ResearchRecordAdmin):
    list_display = ["request", "revision", "outcome", "chair", "decided_at", "access_until"]
    list_filter = ["outcome"]


@admin.register(ReleaseFile)
class ReleaseFileAdmin(ResearchRecordAdmin):
    list_display = ["release", "name", "bytes", "rows", "sha256"]


@admin.register(Download)
class DownloadAdmin(ResearchRecordAdmin):
    list_display = ["at", "user", "release", "file", "channel"]
    list_filter = ["channel"]


@admin.register(PartnerQuery)
class PartnerQueryAdmin(ResearchRecordAdmin):
    """The partner query log, for the audit: read-only and never deleted (the budget and the
    overlap audit read it). The population's bitmap is shown as its size only. Flagged queries
    (a population 1 to MIN_CELL-1 patients from an earlier answered one) are the registry
    admin's to review: filter by `overlap_flagged`."""

    list_display = ["created_at", "user", "endpoint", "outcome", "epsilon_charged", "patients",
                    "overlap_flagged"]
    list_filter = ["overlap_flagged", "outcome", "endpoint"]
    search_fields = ["user__username", "fingerprint", "data_digest"]
    exclude = ["population"]  # a bitmap: its size is `patients`
